"""Reminders: a lead's follow-up date and the next contact planned on an account or deal, kept from
the events that set them, and the escalation ladder that fires on them (docs: the rep when due, the
rep again a day later, the rep and their manager after three days with nothing logged).

A reminder is closed when the record is worked (an activity is logged), closed (a lead converted,
disqualified or deleted; a deal won or lost; an account deleted) and moves with the record when
someone else is given it (the new owner is reminded instead). Times are kept in UTC; people read
them in their own time zone."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from crmkit import clock
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings

from . import preferences
from .batch import current, load_reminders
from .db import DirectoryTeam, Reminder
from .inbox import About, notify
from .messages import Text, local_time, render, word

log = logging.getLogger(__name__)
OPEN_LEAD_STATUSES = ("new", "contacted", "qualified")


@dataclass(frozen=True)
class Rung:
    after: dt.timedelta  # after the due time
    notify: tuple[str, ...]  # "owner", "manager"


def _ladder_from(text: str) -> tuple[Rung, ...]:
    rungs = tuple(Rung(dt.timedelta(hours=float(r["after_hours"])), tuple(r["notify"])) for r in json.loads(text))
    if not rungs or any(not set(r.notify) <= {"owner", "manager"} or not r.notify for r in rungs) \
            or list(rungs) != sorted(rungs, key=lambda r: r.after):
        raise ValueError("NOTIFICATIONS_LADDER: rungs in time order, each notifying owner and/or manager")
    return rungs


DEFAULT_LADDER = ('[{"after_hours": 0, "notify": ["owner"]}, {"after_hours": 24, "notify": ["owner"]},'
                  ' {"after_hours": 72, "notify": ["owner", "manager"]}]')


def ladder() -> tuple[Rung, ...]:
    """The escalation ladder, as data: NOTIFICATIONS_LADDER (JSON), or the default."""
    return _ladder_from(os.environ.get("NOTIFICATIONS_LADDER") or DEFAULT_LADDER)


def next_time(due_at: dt.datetime, rung: int, rungs: tuple[Rung, ...]) -> dt.datetime | None:
    return due_at + rungs[rung].after if rung < len(rungs) else None


# ---- upkeep from events -----------------------------------------------------------------------------
# Events about one record arrive in order (the record is the Kafka key) and a replay is dropped by the
# consumer, so each is applied as it comes: an event's own time (a producer's clock) decides nothing.
def keep(uow: UnitOfWork, *, record_type: str, record_id: str, kind: str, title: str, owner_id: str | None,
         team_id: str | None, due_at: dt.datetime | None, as_of: dt.datetime, account_id: uuid.UUID | None = None,
         worked: bool = False) -> None:
    """The record's reminder as an event now says it is: due at `due_at` for `owner_id` (none: no
    reminder). A new due time or work on the record start the ladder again from the due time; a new
    owner starts it from now if the due time has passed (they are reminded, not escalated at once)."""
    batch = current(uow)
    if batch is not None:
        load_reminders(uow, batch, [(record_type, record_id, kind)])
        row = batch.reminders[(record_type, record_id, kind)]
    else:
        row = uow.session.execute(select(Reminder).where(
            Reminder.record_type == record_type, Reminder.record_id == record_id, Reminder.kind == kind)
            .with_for_update()).scalar_one_or_none()
    if due_at is None or owner_id is None:
        if row is not None and row.status == "open":
            row.status, row.next_at, row.as_of, row.updated_at = ("done" if worked else "cancelled"), None, as_of, utcnow()
        return
    if row is None:
        # The id is set here, not by the column default: rows whose keys are all given go in as one
        # executemany, where a default drawn at flush time made the ORM send 500 rows as one statement.
        row = Reminder(id=uuid.uuid4(), record_type=record_type, record_id=record_id, kind=kind, status="new",
                       due_at=due_at, ladder_start=due_at, rung=0, as_of=as_of)
        uow.session.add(row)
        if batch is not None:
            batch.reminders[(record_type, record_id, kind)] = row
    fresh = row.status != "open" or row.due_at != due_at or worked
    new_owner = row.owner_id is not None and row.owner_id != owner_id
    row.title, row.account_id, row.team_id = title[:300], account_id, team_id
    row.as_of, row.updated_at = as_of, utcnow()
    if fresh:
        row.status, row.due_at, row.rung, row.ladder_start = "open", due_at, 0, due_at
    if new_owner and not fresh:
        _restart_for(row, owner_id, utcnow())
    row.owner_id = owner_id
    if fresh:
        row.next_at = next_time(row.ladder_start, 0, ladder())


def close(uow: UnitOfWork, *, record_type: str, record_id: str, as_of: dt.datetime, worked: bool = False) -> None:
    """The record was closed (or worked): its open reminders stop."""
    for row in uow.session.execute(select(Reminder).where(
            Reminder.record_type == record_type, Reminder.record_id == record_id, Reminder.status == "open")
            .with_for_update()).scalars():
        row.status, row.next_at, row.as_of, row.updated_at = ("done" if worked else "cancelled"), None, as_of, utcnow()


def move(uow: UnitOfWork, *, record_type: str, record_id: str, owner_id: str | None, team_id: str | None,
         as_of: dt.datetime) -> None:
    """The record has a new owner: they are reminded instead, from the first rung."""
    for row in uow.session.execute(select(Reminder).where(
            Reminder.record_type == record_type, Reminder.record_id == record_id, Reminder.status == "open")
            .with_for_update()).scalars():
        if row.owner_id != owner_id:
            _restart_for(row, owner_id, utcnow())
            row.team_id, row.as_of, row.updated_at = team_id, as_of, utcnow()


def _restart_for(row: Reminder, owner_id: str | None, now: dt.datetime) -> None:
    """A new owner hears of it from the first rung: at the due time, or now if that has passed. The
    ladder's start is part of each rung's key, so an owner it comes back to is told again."""
    row.owner_id, row.rung = owner_id, 0
    row.ladder_start = max(row.due_at, now)
    row.next_at = next_time(row.ladder_start, 0, ladder())


# ---- the schedule ------------------------------------------------------------------------------------
def fire_due(uow: UnitOfWork, settings: Settings, now: dt.datetime, limit: int = 500) -> int:
    """Fire every rung due by `now` (at most `limit` this time); returns how many fired. Rows are
    locked and skipped by a second worker, so two replicas never fire one rung twice (and a rung
    is unique by its source key besides)."""
    rungs = ladder()
    stmt = (select(Reminder).where(Reminder.status == "open", Reminder.next_at <= now)
            .order_by(Reminder.next_at, Reminder.id).limit(limit))
    if uow.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    fired = 0
    for row in uow.session.execute(stmt).scalars().all():
        # A worker down for days does not fire the rungs it missed in a burst: only the last one
        # whose time has come (the manager hears of it once, not after a day's reminder replayed).
        while row.rung + 1 < len(rungs) and next_time(row.ladder_start, row.rung + 1, rungs) <= now:
            row.rung += 1
        if row.rung < len(rungs):
            try:
                with uow.session.begin_nested():  # one reminder that cannot be told stops no other
                    _fire(uow, settings, row, row.rung, rungs[row.rung], now)
                fired += 1
            except (ValueError, OverflowError, LookupError):
                log.exception("reminder %s could not be told; its ladder moves on", row.id)
        row.rung += 1
        row.next_at = next_time(row.ladder_start, row.rung, rungs)
        row.updated_at = utcnow()
    return fired


_LINKS = {"lead": "/leads/{}", "account": "/accounts/{}", "opportunity": "/opportunities/{}", "visit": "/visits/{}"}


def link_of(record_type: str, record_id: str) -> str:
    """Where a reminder's record is read; a day's report by its day ("{owner}/{day}")."""
    if record_type == "daily_report":
        return f"/daily-reports?date={record_id.rsplit('/', 1)[-1]}"
    return _LINKS[record_type].format(record_id)


def _fire(uow: UnitOfWork, settings: Settings, row: Reminder, index: int, rung: Rung, now: dt.datetime) -> None:
    manager = None
    # A visit's reminder is the rep's alone: its title names the customer, whom the rep's manager may
    # not see (another team's account the rep helps on), and the end of the day misses it anyway.
    if "manager" in rung.notify and row.team_id and row.record_type != "visit":
        team = uow.session.get(DirectoryTeam, row.team_id)
        manager = team.manager_id if team is not None and team.manager_id != row.owner_id else None
    overdue = index > 0
    kind = "follow_up_overdue" if overdue else "follow_up_due"
    link = link_of(row.record_type, row.record_id)

    def text(recipient: str, language: str) -> Text:
        zone = preferences.of(uow, recipient).zone
        return render(kind, language, {
            "title": row.title, "what": word(language, row.kind), "due": local_time(row.due_at, zone),
            "whose": word(language, "manager_too") if manager and recipient == row.owner_id else ""})

    recipients = [row.owner_id] + ([manager] if manager else [])
    notify(uow, settings, recipients, kind, text,
           About(row.record_type, row.record_id, row.account_id, link),
           source_key=f"reminder:{row.id}:{row.ladder_start.isoformat()}:{index}", at=now)


def reminder_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 30.0) -> None:
    """The worker's reminder schedule: fire what is due, every `interval` seconds, by crmkit.clock."""
    while not stop.is_set():
        try:
            while True:
                with db.uow() as uow:
                    fired = fire_due(uow, settings, clock.now())
                    uow.commit()
                if fired < 500:
                    break
        except Exception:  # a database outage: try again next time
            log.exception("reminder schedule failed; retrying")
        stop.wait(interval)
