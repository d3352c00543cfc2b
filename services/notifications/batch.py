"""What a consumer batch of events reads once instead of once per notification: the people it tells
(the directory replica), their preferences, the notifications already raised from these events,
the active webhook endpoints, and the reminders of the records the events are about. Kept in the
unit of work's `state` (gone with the transaction, so never stale across commits); set up by the
worker's `prepare` hook, and filled lazily for whatever the hook did not foresee. Anything outside
a consumer batch (the API, the schedules) reads straight from the database."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select, tuple_

from crmkit.db import UnitOfWork

from .db import DirectoryUser, Notification, Preference, Reminder, WebhookEndpoint


@dataclass
class Batch:
    users: dict[str, DirectoryUser | None] = field(default_factory=dict)
    preferences: dict[str, Preference | None] = field(default_factory=dict)
    told_sources: set[str] = field(default_factory=set)  # source keys whose notifications are loaded
    told: set[tuple[str, str, str]] = field(default_factory=set)  # (source key, recipient, type)
    endpoints: list[WebhookEndpoint] | None = None
    reminders: dict[tuple[str, str, str], Reminder | None] = field(default_factory=dict)
    raised: Counter = field(default_factory=Counter)  # type -> notifications made (for the metric)


def current(uow: UnitOfWork) -> Batch | None:
    state = getattr(uow, "state", None)
    return state if isinstance(state, Batch) else None


def start(uow: UnitOfWork) -> Batch:
    batch = current(uow)
    if batch is None:
        batch = uow.state = Batch()
        from crmkit import metrics

        def count() -> None:
            for kind, n in batch.raised.items():
                metrics.NOTIFICATIONS_RAISED.labels(kind).inc(n)
        uow.before_commit(count)
    return batch


def load_people(uow: UnitOfWork, batch: Batch, ids) -> None:
    wanted = sorted({i for i in ids if i and i not in batch.users})
    for chunk in (wanted[k:k + 1000] for k in range(0, len(wanted), 1000)):
        found = {u.id: u for u in uow.session.execute(select(DirectoryUser).where(DirectoryUser.id.in_(chunk))).scalars()}
        prefs = {p.user_id: p for p in uow.session.execute(
            select(Preference).where(Preference.user_id.in_(chunk))).scalars()}
        for i in chunk:
            batch.users[i], batch.preferences[i] = found.get(i), prefs.get(i)


def load_told(uow: UnitOfWork, batch: Batch, source_keys) -> None:
    wanted = sorted({k for k in source_keys if k not in batch.told_sources})
    for chunk in (wanted[k:k + 1000] for k in range(0, len(wanted), 1000)):
        batch.told.update(uow.session.execute(select(Notification.source_key, Notification.recipient_id,
                                                     Notification.type).where(Notification.source_key.in_(chunk))).all())
        batch.told_sources.update(chunk)


def load_reminders(uow: UnitOfWork, batch: Batch, keys) -> None:
    """The reminders of these (record type, record id, kind), locked as keep() would lock each."""
    wanted = sorted({k for k in keys if k not in batch.reminders})
    for chunk in (wanted[k:k + 500] for k in range(0, len(wanted), 500)):
        found = {(r.record_type, r.record_id, r.kind): r for r in uow.session.execute(
            select(Reminder).where(tuple_(Reminder.record_type, Reminder.record_id, Reminder.kind).in_(chunk))
            .order_by(Reminder.id).with_for_update()).scalars()}
        for key in chunk:
            batch.reminders[key] = found.get(key)


def prepare(uow: UnitOfWork, envelopes: list[dict]) -> None:
    """The worker's prepare hook for every topic it reads: one query each for the people the batch
    may tell, the notifications its events already raised, and the leads' reminders."""
    batch = start(uow)
    people, leads = set(), set()
    for envelope in envelopes:
        data = envelope.get("data") if isinstance(envelope.get("data"), dict) else {}
        lead = data.get("lead") if isinstance(data.get("lead"), dict) else {}
        for value in (lead.get("owner_id"), data.get("owner_id"), data.get("requested_by")):
            if isinstance(value, str):
                people.add(value)
        for value in (lead.get("id"), data.get("lead_id")):
            if isinstance(value, str):
                leads.add(("lead", value, "follow_up"))
    load_people(uow, batch, people)
    load_told(uow, batch, [e["id"] for e in envelopes if isinstance(e.get("id"), str)])
    load_reminders(uow, batch, leads)
