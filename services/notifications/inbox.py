"""Telling people (`notify`) and their inbox (list, read, read all). A notification belongs to its
recipient alone: anyone else asking for it gets 404, whatever their role."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select, update

from crmkit import metrics
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound
from crmkit.pagination import paginate, parse_sort
from crmkit.settings import Settings

from . import preferences, webhooks
from .batch import current, load_people, load_told
from .db import Delivery, DirectoryUser, Notification
from .events import NOTIFICATION_CREATED, event
from .messages import Text


@dataclass(frozen=True)
class About:
    """The record a notification is about, and where it links."""
    record_type: str | None = None
    record_id: str | None = None
    account_id: uuid.UUID | None = None
    link: str | None = None


def notify(uow: UnitOfWork, settings: Settings, recipients: Iterable[str | None], kind: str,
           text: Callable[[str, str], Text], about: About, *, source_key: str, event_id: str | None = None,
           actor=None, at: dt.datetime | None = None) -> list[Notification]:
    """Tell each recipient (once: a notification is unique by what raised it, recipient and kind),
    worded by `text(recipient, language)`; queue its e-mail by their preferences. People the
    directory knows as deactivated are not told. `at`: the schedule's time it is raised at (quiet
    hours are judged by it), if not now. Returns the notifications made now."""
    made = []
    now = utcnow()
    batch = current(uow)
    for recipient in dict.fromkeys(r for r in recipients if r):
        if batch is not None:
            load_people(uow, batch, [recipient])
            load_told(uow, batch, [source_key])
            user = batch.users[recipient]
            told = (source_key, recipient, kind) in batch.told
        else:
            user = uow.session.get(DirectoryUser, recipient)
            told = uow.session.execute(select(Notification.id).where(
                Notification.source_key == source_key, Notification.recipient_id == recipient,
                Notification.type == kind)).first() is not None
        if told or (user is not None and not user.active):
            continue
        prefs = preferences.of(uow, recipient)
        words = text(recipient, prefs.language)
        note = Notification(id=uuid.uuid4(), recipient_id=recipient, type=kind, title=words.title, body=words.body,
                            link=about.link, event_id=event_id, source_key=source_key, record_type=about.record_type,
                            record_id=about.record_id, account_id=about.account_id, created_at=now,
                            # Not wanted in the app: kept (it is what an e-mail is sent from) but read.
                            read_at=None if prefs.wants(kind, "inapp") else now)
        uow.session.add(note)
        # A digest reader gets the morning agenda by e-mail, and nothing else.
        if prefs.wants(kind, "email") and prefs.email and (kind == "agenda" or not prefs.digest):
            uow.session.add(Delivery(notification=note, channel="email", address=prefs.email, status="pending",
                                     attempts=0, next_attempt_at=preferences.after_quiet_hours(prefs, at or now),
                                     created_at=now))
        if prefs.wants(kind, "webhook"):
            webhooks.fan_out(uow, note, now)
        if batch is not None:
            batch.told.add((source_key, recipient, kind))
            batch.raised[kind] += 1
        else:
            uow.before_commit(lambda kind=kind: metrics.NOTIFICATIONS_RAISED.labels(kind).inc())
        uow.publish(*event(settings, NOTIFICATION_CREATED, recipient, {"notification": note}, actor=actor))
        made.append(note)
    if batch is None:
        uow.session.flush()
    return made


def _mine(principal, account_id=None):
    stmt = select(Notification).where(Notification.recipient_id == principal.user_id)
    if account_id is not None:
        stmt = stmt.where(Notification.account_id == account_id)
    return stmt


def list_notifications(uow: UnitOfWork, principal, args: dict) -> tuple[list[Notification], str | None, int]:
    """The caller's notifications, newest first: (page, next cursor, how many are unread)."""
    stmt = _mine(principal, args.get("account_id"))
    if args.get("unread"):
        stmt = stmt.where(Notification.read_at.is_(None))
    elif args.get("unread") is False:
        stmt = stmt.where(Notification.read_at.is_not(None))
    if args.get("type"):
        stmt = stmt.where(Notification.type == args["type"])
    items, cursor = paginate(uow.session, stmt, model=Notification, sort=parse_sort(None, {"created_at"}, "-created_at"),
                             limit=args["limit"], cursor=args.get("cursor"))
    return items, cursor, unread_count(uow, principal)


def unread_count(uow: UnitOfWork, principal) -> int:
    return uow.session.execute(select(func.count()).select_from(Notification).where(
        Notification.recipient_id == principal.user_id, Notification.read_at.is_(None))).scalar_one()


def mark_read(uow: UnitOfWork, principal, notification_id: uuid.UUID) -> Notification:
    note = uow.session.get(Notification, notification_id)
    if note is None or note.recipient_id != principal.user_id:
        raise NotFound("no such notification")
    note.read_at = note.read_at or utcnow()
    return note


def mark_all_read(uow: UnitOfWork, principal, before: dt.datetime | None = None) -> int:
    """Read every unread notification of the caller's (raised before `before`, if given: what the
    person saw when they pressed the button, not what arrived a moment later)."""
    stmt = (update(Notification).where(Notification.recipient_id == principal.user_id, Notification.read_at.is_(None))
            .values(read_at=utcnow()))
    if before is not None:
        stmt = stmt.where(Notification.created_at <= before)
    return uow.session.execute(stmt.execution_options(synchronize_session=False)).rowcount
