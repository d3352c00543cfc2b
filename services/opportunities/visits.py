"""Visit plans (CONTRACT §4): a rep, or their manager, plans visits and calls on accounts and leads;
each is then checked in (which logs the activity on the record), rescheduled or missed; what is not
checked in by the end of its day is marked missed by the worker, once. Each use case leaves the
commit to its caller."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

from sqlalchemy import select

from crmkit import clock
from crmkit.auth import Principal
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.errors import Conflict, NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.periods import local_day
from crmkit.settings import Settings
from crmkit.visibility import visible

from . import domain, people, visit_progress
from .accounts import visible_account
from .activities import log_activity
from .day_db import LEAD_VISIBILITY, VISIT_VISIBILITY, KnownLead, Visit
from .db import Account, Contact, account_visible, visible_row
from .events import event

log = logging.getLogger(__name__)
PLAN_AHEAD = dt.timedelta(days=366)
CHECK_IN_SLACK = dt.timedelta(minutes=5)  # a phone's clock a little ahead of ours is not "the future"
SWEEP_BATCH = 500
# The activity a lead visit's check-in logs in the leads service: its id is known here beforehand,
# so the visit points at it and a replayed event cannot log it twice.
CLOSED_LEAD = ("converted", "disqualified", "deleted")  # no visit is planned or checked in on these
LEAD_ACTIVITY_NAMESPACE = uuid.UUID("7d1f3a52-5c1e-4b8e-9a51-2b0c4f6e8d10")


def lead_activity_id(visit_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(LEAD_ACTIVITY_NAMESPACE, str(visit_id))


def visible_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID) -> KnownLead:
    """A lead as far as this service knows it (from crm.leads.v1), if the caller may see it. A lead
    created a moment ago may not be known here yet: 404 until its event arrives."""
    lead = uow.session.execute(select(KnownLead).where(
        KnownLead.id == lead_id, KnownLead.status.notin_(CLOSED_LEAD),
        visible(principal, LEAD_VISIBILITY))).scalar_one_or_none()
    if lead is None:
        raise NotFound(f"lead {lead_id} not found, or not open")
    return lead


def visible_visit(uow: UnitOfWork, principal: Principal, visit_id: uuid.UUID, *, for_update=False) -> Visit:
    visit = visible_row(uow.session, Visit, VISIT_VISIBILITY, principal, visit_id, for_update=for_update)
    if visit is None:
        raise NotFound(f"visit {visit_id} not found")
    return visit


def _writable_visit(uow: UnitOfWork, principal: Principal, visit_id: uuid.UUID) -> Visit:
    visit = visible_visit(uow, principal, visit_id, for_update=True)
    domain.check_may_write(principal, visit.owner_id, visit.team_id)
    if visit.status != "planned":
        raise Conflict(f"the visit is {visit.status}, no longer planned")
    return visit


def _check_target(uow: UnitOfWork, principal: Principal, owner: Principal, data: dict) -> None:
    """The caller must see the record (404 otherwise, as for any hidden record), and so must the rep
    who is to visit it: they will log the activity on it."""
    if data.get("account_id"):
        account = visible_account(uow, principal, data["account_id"])
        if owner.user_id != principal.user_id and uow.session.execute(select(Account.id).where(
                Account.id == account.id, account_visible(owner))).first() is None:
            raise ValidationFailed("the rep does not work this account", errors={"owner_id": ["cannot see the account"]})
        if data.get("contact_id") and uow.session.execute(select(Contact.id).where(
                Contact.id == data["contact_id"], Contact.account_id == account.id,
                Contact.deleted_at.is_(None))).first() is None:
            raise ValidationFailed("no such contact on this account", errors={"contact_id": ["not a contact of it"]})
    else:
        visible_lead(uow, principal, data["lead_id"])
        if owner.user_id != principal.user_id:
            try:
                visible_lead(uow, owner, data["lead_id"])
            except NotFound:
                raise ValidationFailed("the rep does not hold this lead",
                                       errors={"owner_id": ["cannot see the lead"]}) from None


def _check_day(planned_at: dt.datetime) -> dt.date:
    """A plan is for today or later (where the company works; by the schedules' clock, which tests move)."""
    day, today = local_day(planned_at), local_day(clock.now())
    if day < today:
        raise ValidationFailed("that day is over: plan today or later", errors={"planned_at": ["a day already past"]})
    if planned_at > clock.now() + PLAN_AHEAD:
        raise ValidationFailed("plans reach a year ahead at most", errors={"planned_at": ["more than a year ahead"]})
    return day


def _check_still_seen(uow: UnitOfWork, who: Principal, visit: Visit) -> None:
    """Whoever checks a visit in logs the activity on its record, so must see it still (a manager
    whose rep works another team's account does not: the rep checks it in). The answer names no id:
    the visit shows the caller none for such a record."""
    if visit.account_id is not None:
        seen = uow.session.execute(select(Account.id).where(
            Account.id == visit.account_id, Account.deleted_at.is_(None), account_visible(who))).first()
    else:
        seen = uow.session.execute(select(KnownLead.id).where(
            KnownLead.id == visit.lead_id, KnownLead.status.notin_(CLOSED_LEAD),
            visible(who, LEAD_VISIBILITY))).first()
    if seen is None:
        raise Conflict("the visited record is not one you may work on now (gone, closed, or another's): "
                       "reschedule or miss the visit")


def visit_event(uow: UnitOfWork, settings: Settings, kind: str, visit: Visit, actor, extra: dict | None = None) -> None:
    uow.publish(*event(settings, kind, visit.id, {"visit": visit, "manager_id": people.manager_of(uow, visit.owner_id),
                                                  **(extra or {})}, actor=actor))


def plan(uow: UnitOfWork, settings: Settings, principal: Principal, data: dict) -> Visit:
    """Plan a visit or call for yourself, or (a manager, executive or admin) for one of your reps."""
    owner_id, team_id = people.ownership(uow, principal, data.pop("owner_id", None))
    owner = principal if owner_id == principal.user_id else people.principal_of(uow, owner_id, team_id)
    _check_target(uow, principal, owner, data)
    now = utcnow()
    visit = Visit(id=uuid.uuid4(), owner_id=owner_id, team_id=team_id, account_id=data.get("account_id"),
                  lead_id=data.get("lead_id"), contact_id=data.get("contact_id"), kind=data["kind"],
                  planned_at=data["planned_at"], day=_check_day(data["planned_at"]), purpose=data.get("purpose"),
                  status="planned", created_by=principal.user_id, created_at=now, updated_at=now, version=1)
    uow.session.add(visit)
    uow.session.flush()
    visit_event(uow, settings, "visit.planned", visit, principal.user_id)
    return visit


def check_in(uow: UnitOfWork, settings: Settings, principal: Principal, visit_id: uuid.UUID, data: dict) -> Visit:
    """Done: the activity is logged on the record (an account's here; a lead's by the leads service,
    from visit.checked_in), with the outcome as its summary and the next-contact date."""
    visit = _writable_visit(uow, principal, visit_id)
    now = utcnow()
    at = data.get("at") or now
    if at > now + CHECK_IN_SLACK:
        raise ValidationFailed("a check-in is for what happened", errors={"at": ["in the future"]})
    if local_day(at) != visit.day:
        # Done another day is not this plan kept: the visit is rescheduled (or missed) instead, and
        # the figures of the day and week it belongs to stay true.
        raise ValidationFailed("a visit is checked in on its own day", errors={"at": [f"not on {visit.day}"]})
    if data.get("next_contact_at") is not None and data["next_contact_at"] < at:
        raise ValidationFailed("the next contact comes after this one", errors={"next_contact_at": ["before the visit"]})
    _check_still_seen(uow, principal, visit)
    if visit.account_id is not None:
        activity = log_activity(uow, settings, principal, {
            "kind": visit.kind, "summary": data["outcome"], "occurred_at": at,
            "next_contact_at": data.get("next_contact_at")}, account_id=visit.account_id)
        visit.activity_id = activity.id
    else:
        visit.activity_id = lead_activity_id(visit.id)
    visit.status, visit.checked_in_at, visit.updated_at = "done", at, now
    visit.latitude, visit.longitude = data.get("latitude"), data.get("longitude")
    visit.address, visit.outcome, visit.next_contact_at = data.get("address"), data["outcome"], data.get("next_contact_at")
    uow.session.flush()
    # A check-in entered after what followed it (it is back-dated to its time): this visit only.
    visit_progress.refresh(uow, visit.owner_id, visit.account_id, since=at, until=at)
    visit_event(uow, settings, "visit.checked_in", visit, principal.user_id, {
        "latitude": visit.latitude, "longitude": visit.longitude, "address": visit.address})
    return visit


def reschedule(uow: UnitOfWork, settings: Settings, principal: Principal, visit_id: uuid.UUID, data: dict) -> Visit:
    """The visit moves: it is marked rescheduled with the reason, and its new time is a planned visit
    of its own (so the day it left still shows what happened to its plan)."""
    visit = _writable_visit(uow, principal, visit_id)
    owner = principal if visit.owner_id == principal.user_id else people.principal_of(uow, visit.owner_id, visit.team_id)
    _check_still_seen(uow, owner, visit)
    if data["planned_at"] == visit.planned_at:
        raise ValidationFailed("that is when it is planned already", errors={"planned_at": ["unchanged"]})
    now = utcnow()
    moved = Visit(id=uuid.uuid4(), owner_id=visit.owner_id, team_id=visit.team_id, account_id=visit.account_id,
                  lead_id=visit.lead_id, contact_id=visit.contact_id, kind=visit.kind, planned_at=data["planned_at"],
                  day=_check_day(data["planned_at"]), purpose=visit.purpose, status="planned",
                  rescheduled_from=visit.id, created_by=principal.user_id, created_at=now, updated_at=now, version=1)
    uow.session.add(moved)
    visit.status, visit.reason, visit.rescheduled_to, visit.updated_at = "rescheduled", data["reason"], moved.id, now
    uow.session.flush()
    visit_event(uow, settings, "visit.rescheduled", visit, principal.user_id)
    visit_event(uow, settings, "visit.planned", moved, principal.user_id)
    return visit


def miss(uow: UnitOfWork, settings: Settings, principal: Principal, visit_id: uuid.UUID, reason: str) -> Visit:
    visit = _writable_visit(uow, principal, visit_id)
    visit.status, visit.reason, visit.updated_at = "missed", reason, utcnow()
    uow.session.flush()
    visit_event(uow, settings, "visit.missed", visit, principal.user_id, {"automatic": False})
    return visit


def list_visits(uow: UnitOfWork, principal: Principal, args: dict):
    stmt = select(Visit).where(visible(principal, VISIT_VISIBILITY))
    for name, column in (("date", Visit.day), ("owner_id", Visit.owner_id), ("team_id", Visit.team_id),
                         ("status", Visit.status)):
        if args.get(name) is not None:
            stmt = stmt.where(column == args[name])
    items, cursor = paginate(uow.session, stmt, model=Visit, sort=SortSpec("planned_at", descending=False),
                             limit=args["limit"], cursor=args.get("cursor"))
    return render(uow, principal, items), cursor


def render(uow: UnitOfWork, principal: Principal, visits: list[Visit]) -> list[dict]:
    """Visits as the caller may read them: a visit of the caller's rep to a record the caller may not
    see (an account the rep works on another team's behalf) names neither the record nor the contact."""
    accounts = {v.account_id for v in visits if v.account_id}
    leads = {v.lead_id for v in visits if v.lead_id}
    seen = set()
    if accounts:
        seen |= set(uow.session.execute(select(Account.id).where(
            Account.id.in_(accounts), Account.deleted_at.is_(None), account_visible(principal))).scalars())
    if leads:
        seen |= set(uow.session.execute(select(KnownLead.id).where(
            KnownLead.id.in_(leads), visible(principal, LEAD_VISIBILITY))).scalars())
    out = []
    for v in visits:
        item = {c: getattr(v, c) for c in _VISIT_FIELDS}
        item["target_hidden"] = (v.account_id or v.lead_id) not in seen
        if item["target_hidden"]:
            item.update(dict.fromkeys(HIDDEN_WITH_TARGET))
        out.append(item)
    return out


# What a visit says of its record: left out with it (the outcome is the activity's summary on that
# record; the address and coordinates say where the customer is).
HIDDEN_WITH_TARGET = ("account_id", "lead_id", "contact_id", "purpose", "outcome", "address", "latitude", "longitude",
                      "activity_id", "next_contact_at")
_VISIT_FIELDS = ("id", "owner_id", "team_id", "account_id", "lead_id", "contact_id", "kind", "planned_at", "day",
                 "purpose", "status", "checked_in_at", "latitude", "longitude", "address", "outcome",
                 "next_contact_at", "activity_id", "reason", "rescheduled_to", "rescheduled_from", "created_by",
                 "created_at", "updated_at", "version")


# ---- the end of the day ------------------------------------------------------------------------------
def sweep(db: Database, settings: Settings, now: dt.datetime | None = None) -> int:
    """Mark missed what was planned for a day that is over and never checked in; returns how many.
    Each visit changes once: the update is conditional on it still being planned, in the same
    transaction as its visit.missed, so a restart in the middle repeats nothing."""
    today, missed = local_day(now or clock.now()), 0
    while True:
        with db.uow() as uow:
            stmt = (select(Visit).where(Visit.status == "planned", Visit.day < today)
                    .order_by(Visit.day, Visit.id).limit(SWEEP_BATCH))
            if uow.session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            batch = uow.session.execute(stmt).scalars().all()
            stamp = utcnow()
            for visit in batch:
                visit.status, visit.reason, visit.updated_at = "missed", "not checked in by the end of the day", stamp
            uow.session.flush()
            people.remember_managers(uow, [v.owner_id for v in batch])
            for visit in batch:
                visit_event(uow, settings, "visit.missed", visit, None, {"automatic": True})
            uow.commit()
        missed += len(batch)
        if len(batch) < SWEEP_BATCH:
            return missed


def sweep_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 60.0) -> None:
    """The worker's end-of-day schedule (OPPORTUNITIES_VISIT_SWEEP_SECONDS)."""
    while not stop.is_set():
        try:
            count = sweep(db, settings)
            if count:
                log.info("visits missed at the end of their day", extra={"count": count})
        except Exception:  # the database away: next time
            log.exception("visit sweep failed; retrying")
        stop.wait(interval)
