"""Reading and changing one lead after it came in: get, list, edit, delete, log an activity (which
moves the follow-up date), and the funnel counts."""
from __future__ import annotations

import datetime as dt
import os
import uuid

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate, parse_sort
from crmkit.settings import Settings

from . import domain
from .db import (
    MONEY_BLIND_ROLES,
    SORTABLE,
    Lead,
    LeadActivity,
    LeadRepository,
)
from .dedupe import KEYED_FIELDS, refresh_keys
from .events import lead_event, leads_event
from .rules import rescore


def follow_up_sla() -> dt.timedelta:
    hours = os.environ.get("LEADS_FOLLOW_UP_SLA_HOURS")
    return dt.timedelta(hours=float(hours)) if hours else domain.DEFAULT_FOLLOW_UP_SLA


def publish(uow: UnitOfWork, settings: Settings, event_type: str, lead: Lead, actor, extra=None) -> None:
    uow.publish(*lead_event(settings, event_type, lead, actor=actor, extra=extra))


def visible_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, *, for_update: bool = False) -> Lead:
    lead = LeadRepository(uow.session, principal).get(lead_id, for_update=for_update)
    if lead is None:
        raise NotFound(f"lead {lead_id} not found")
    return lead


def get_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID) -> Lead:
    return visible_lead(uow, principal, lead_id)


def list_leads(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), SORTABLE, "-created_at")
    if sort.field == "score" and principal.role in MONEY_BLIND_ROLES:
        sort = SortSpec("score_public", sort.descending)
    limit, cursor = args.pop("limit"), args.pop("cursor", None)
    return LeadRepository(uow.session, principal).list(args, sort=sort, limit=limit, cursor=cursor)


def update_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, changes: dict,
                check_version) -> Lead:
    """`check_version(current_version)` raises 412/428 unless the caller saw this version."""
    lead = visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    check_version(lead.version)
    if "status" in changes:
        domain.check_status_change(lead.status, changes["status"])
    changed = {name: value for name, value in changes.items() if getattr(lead, name) != value}
    if not changed:
        return lead
    for name, value in changed.items():
        setattr(lead, name, value)
    if not (lead.company or lead.contact_name):
        raise ValidationFailed("a lead needs a company or a contact name",
                               errors={"company": ["company and contact_name cannot both be empty"]})
    if set(changed) & set(KEYED_FIELDS):
        refresh_keys(lead)
    rescore(uow, lead)
    if changed.get("status") == "disqualified":
        lead.follow_up_due_at = None
    elif lead.status in domain.OPEN_STATUSES and lead.owner_id and lead.follow_up_due_at is None:
        lead.follow_up_due_at = utcnow() + follow_up_sla()  # re-opened: due again
    lead.updated_at = utcnow()
    uow.session.flush()  # the UPDATE bumps the version the event carries
    publish(uow, settings, "lead.updated", lead, principal.user_id, extra={"changed": sorted(changed)})
    if changed.get("status") == "disqualified":
        publish(uow, settings, "lead.disqualified", lead, principal.user_id)
    return lead


def delete_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID) -> None:
    """Soft delete: the row stays for audit and undo, and disappears from every read."""
    lead = visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    lead.deleted_at = lead.updated_at = utcnow()
    uow.session.flush()
    publish(uow, settings, "lead.deleted", lead, principal.user_id)


def lead_funnel(uow: UnitOfWork, principal: Principal, period) -> dict:
    counts = LeadRepository(uow.session, principal).count_by_status(period.start, period.end)
    return {"period": period.label, "start": period.start, "end": period.end, "leads": sum(counts.values()),
            **domain.funnel_stages(counts)}


def log_activity(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID,
                 data: dict) -> LeadActivity:
    lead = visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    return record_activity(uow, settings, lead, data, principal.user_id)


def record_activity(uow: UnitOfWork, settings: Settings, lead: Lead, data: dict, actor: str | None,
                    activity_id: uuid.UUID | None = None) -> LeadActivity:
    """An activity on a lead (locked by the caller) and what it changes: status, follow-up, score."""
    now = utcnow()
    before = {f: getattr(lead, f) for f in ("status", "follow_up_due_at", "score", "last_activity_at")}
    activity = LeadActivity(id=activity_id or uuid.uuid4(), lead_id=lead.id, kind=data["kind"],
                            summary=data.get("summary"), occurred_at=data.get("occurred_at") or now,
                            next_contact_at=data.get("next_contact_at"), created_by=actor, created_at=now)
    uow.session.add(activity)
    lead.activities += 1
    lead.last_activity_at = max(filter(None, [lead.last_activity_at, activity.occurred_at]))
    lead.status = domain.status_after_activity(lead.status, activity.kind)
    lead.follow_up_due_at = domain.next_follow_up(lead.status, activity.next_contact_at, now, follow_up_sla())
    rescore(uow, lead)
    lead.updated_at = now
    uow.session.flush()
    uow.publish(*leads_event(settings, "activity.logged", lead.id, {
        "lead_id": lead.id, "activity_id": activity.id, "kind": activity.kind, "summary": activity.summary,
        "occurred_at": activity.occurred_at, "next_contact_at": activity.next_contact_at,
        "follow_up_due_at": lead.follow_up_due_at, "owner_id": lead.owner_id, "team_id": lead.team_id,
        "company": lead.company}, actor=actor))
    changed = ["activities", *sorted(f for f, value in before.items() if getattr(lead, f) != value)]
    publish(uow, settings, "lead.updated", lead, actor, extra={"changed": changed})
    return activity


def list_activities(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, args: dict):
    """A lead's activities, newest first, one cursor page at a time."""
    lead = visible_lead(uow, principal, lead_id)
    return paginate(uow.session, select(LeadActivity).where(LeadActivity.lead_id == lead.id), model=LeadActivity,
                    sort=SortSpec("occurred_at", descending=True), limit=args["limit"], cursor=args.get("cursor"))
