"""The daily agenda: the caller's follow-ups and next contacts due in a window, what is overdue, and
the approvals waiting for them (GET /agenda); and the same by e-mail each morning, at
NOTIFICATIONS_AGENDA_HOUR (8 by default) in each person's time zone, once a day, to those who have
something on it and an address to send it to."""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading

from sqlalchemy import or_, select

from crmkit import clock
from crmkit.auth import Principal
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings

from . import preferences, reminders
from .db import AgendaRun, DirectoryUser, Reminder, WaitingApproval
from .inbox import About, notify
from .messages import render, word

log = logging.getLogger(__name__)
def agenda(uow: UnitOfWork, principal, start: dt.datetime, end: dt.datetime) -> dict:
    """What `principal` has to do between `start` and `end`, and what is overdue before `start`."""
    mine = select(Reminder).where(Reminder.owner_id == principal.user_id, Reminder.status == "open")
    due = uow.session.execute(mine.where(Reminder.due_at >= start, Reminder.due_at < end)
                              .order_by(Reminder.due_at, Reminder.id).limit(500)).scalars().all()
    overdue = uow.session.execute(mine.where(Reminder.due_at < start).order_by(Reminder.due_at, Reminder.id)
                                  .limit(200)).scalars().all()
    waiting = select(WaitingApproval).where(WaitingApproval.status == "pending")
    if principal.role == "executive":
        waiting = waiting.where(or_(WaitingApproval.approver_id == principal.user_id,
                                    WaitingApproval.approver_id.is_(None)))
    else:
        waiting = waiting.where(WaitingApproval.approver_id == principal.user_id)
    approvals = uow.session.execute(waiting.order_by(WaitingApproval.since, WaitingApproval.id)).scalars().all()
    return {"from": start, "to": end, "due": [_item(r) for r in due], "overdue": [_item(r) for r in overdue],
            "approvals": [{"approval_id": a.id, "order_id": a.order_id, "order_number": a.order_number,
                           "level": a.level, "waiting_since": a.since, "link": f"/orders/{a.order_id}"}
                          for a in approvals]}


def _item(row: Reminder) -> dict:
    return {"kind": row.kind, "record_type": row.record_type, "record_id": row.record_id, "title": row.title,
            "due_at": row.due_at, "account_id": row.account_id, "link": reminders.link_of(row.record_type, row.record_id)}


def today(prefs: preferences.Preferences, now: dt.datetime) -> tuple[dt.date, dt.datetime, dt.datetime]:
    """The person's local day at `now`, and its bounds in UTC."""
    day = now.astimezone(prefs.zone).date()
    start = dt.datetime.combine(day, dt.time(), tzinfo=prefs.zone)
    return day, start.astimezone(dt.UTC), (start + dt.timedelta(days=1)).astimezone(dt.UTC)


def agenda_hour() -> int:
    return int(os.environ.get("NOTIFICATIONS_AGENDA_HOUR", "8"))


def send_morning_agendas(uow: UnitOfWork, settings: Settings, now: dt.datetime) -> int:
    """Tell everyone whose morning it is (and who has not been told today) their agenda; returns
    how many were told. The e-mail is a notification of kind `agenda` (e-mail only by default)."""
    told = 0
    hour = agenda_hour()
    people = uow.session.execute(select(DirectoryUser).where(DirectoryUser.active.is_(True))
                                 .order_by(DirectoryUser.id)).scalars().all()
    for person in people:
        prefs = preferences.of(uow, person.id)
        if not prefs.agenda_email or not prefs.wants("agenda", "email") or not prefs.email:
            continue
        day, start, end = today(prefs, now)
        if now.astimezone(prefs.zone).hour < hour or uow.session.get(AgendaRun, (person.id, day)) is not None:
            continue
        uow.session.add(AgendaRun(user_id=person.id, day=day, sent_at=utcnow()))
        items = agenda(uow, Principal(user_id=person.id, role=person.role, teams=(), manages=()), start, end)
        if not (items["due"] or items["overdue"] or items["approvals"]):
            continue
        try:
            with uow.session.begin_nested():  # one person's agenda that cannot be written stops no other's
                lines = _lines(items, prefs)
                notify(uow, settings, [person.id], "agenda",
                       lambda _r, language, lines=lines, day=day: render("agenda", language, {
                           "day": day.isoformat(), "lines": "\n".join(lines[language])}),
                       About(link="/agenda"), source_key=f"agenda:{day.isoformat()}", at=now)
            told += 1
        except (ValueError, OverflowError, LookupError):
            log.exception("the agenda of %s could not be written", person.id)
    return told


def _lines(items: dict, prefs: preferences.Preferences) -> dict[str, list[str]]:
    out = {}
    for language in ("en", "zh"):
        labels = {"en": ("Due today", "Overdue", "Approvals waiting for you"), "zh": ("今日到期", "已逾期", "待您审批")}[language]
        lines = []
        for label, key in zip(labels[:2], ("due", "overdue"), strict=True):
            if items[key]:
                lines.append(f"{label}:")
                lines += [f"- {i['due_at'].astimezone(prefs.zone):%m-%d %H:%M} {word(language, i['kind'])}: {i['title']}"
                          for i in items[key]]
        if items["approvals"]:
            lines.append(f"{labels[2]}:")
            lines += [f"- {a['order_number']} ({a['level'] or ''})" for a in items["approvals"]]
        out[language] = lines
    return out


def agenda_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 60.0) -> None:
    """The worker's morning agenda schedule, by crmkit.clock."""
    while not stop.is_set():
        try:
            with db.uow() as uow:
                send_morning_agendas(uow, settings, clock.now())
                uow.commit()
        except Exception:  # a database outage: try again next time
            log.exception("agenda schedule failed; retrying")
        stop.wait(interval)
