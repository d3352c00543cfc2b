"""Lead use cases. Each takes a unit of work and leaves the commit to its caller: the API commits
one request, the consumer commits a whole batch of events with their processed ids."""
from __future__ import annotations

import uuid

from marshmallow import ValidationError

from crmkit.auth import Principal
from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound
from crmkit.pagination import parse_sort
from crmkit.settings import Settings

from . import domain
from .db import SORTABLE, Lead, LeadRepository
from .events import lead_event
from .schemas import MarketingLeadSubmittedSchema

_marketing_schema = MarketingLeadSubmittedSchema()


def _publish(uow: UnitOfWork, settings: Settings, event_type: str, lead: Lead, actor, extra=None) -> None:
    uow.publish(*lead_event(settings, event_type, lead, actor=actor, extra=extra))


def _new_lead(**fields) -> Lead:
    # A new row's version is always 1 (version_id_col); setting it here lets the lead.created
    # event be built without a flush, so a batch of creates is one multi-row INSERT.
    return Lead(id=uuid.uuid4(), version=1, status="new", score=0, score_reasons=[], touches=1, **fields)


def create_lead(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Lead:
    now = utcnow()
    owner_id, team_id = domain.initial_ownership(principal)
    lead = _new_lead(currency=settings.default_currency, source="other", owner_id=owner_id, team_id=team_id,
                     created_by=principal.user_id, created_at=now, updated_at=now)
    for name, value in fields.items():
        setattr(lead, name, value)
    if lead.follow_up_due_at is None:
        lead.follow_up_due_at = domain.follow_up_due(owner_id, now)
    LeadRepository(uow.session, principal).add(lead)
    _publish(uow, settings, "lead.created", lead, principal.user_id)
    return lead


def get_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID) -> Lead:
    lead = LeadRepository(uow.session, principal).get(lead_id)
    if lead is None:
        raise NotFound(f"lead {lead_id} not found")
    return lead


def list_leads(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), SORTABLE, "-created_at")
    limit, cursor = args.pop("limit"), args.pop("cursor", None)
    return LeadRepository(uow.session, principal).list(args, sort=sort, limit=limit, cursor=cursor)


def update_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, changes: dict,
                check_version) -> Lead:
    """`check_version(current_version)` raises 412/428 unless the caller saw this version."""
    lead = LeadRepository(uow.session, principal).get(lead_id, for_update=True)
    if lead is None:
        raise NotFound(f"lead {lead_id} not found")
    domain.check_may_modify(principal)
    check_version(lead.version)
    if "status" in changes:
        domain.check_status_change(lead.status, changes["status"])
    before = {name: getattr(lead, name) for name in changes}
    changed = {name: value for name, value in changes.items() if before[name] != value}
    if not changed:
        return lead
    for name, value in changed.items():
        setattr(lead, name, value)
    lead.updated_at = utcnow()
    uow.session.flush()  # the UPDATE bumps the version the event carries
    _publish(uow, settings, "lead.updated", lead, principal.user_id, extra={"changed": sorted(changed)})
    if changed.get("status") == "disqualified":
        _publish(uow, settings, "lead.disqualified", lead, principal.user_id)
    return lead


def delete_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID) -> None:
    """Soft delete: the row stays for audit and undo, and disappears from every read."""
    lead = LeadRepository(uow.session, principal).get(lead_id, for_update=True)
    if lead is None:
        raise NotFound(f"lead {lead_id} not found")
    domain.check_may_modify(principal)
    lead.deleted_at = lead.updated_at = utcnow()
    uow.session.flush()
    _publish(uow, settings, "lead.deleted", lead, principal.user_id)


def ingest_marketing_lead(uow: UnitOfWork, settings: Settings, envelope: dict) -> Lead:
    """Handler of marketing.lead.submitted: a valid message becomes a lead in the unassigned queue."""
    if envelope["type"] != "marketing.lead.submitted":
        raise Reject(f"unexpected event type {envelope['type']!r} on the marketing topic")
    if envelope["version"] != 1:
        raise Reject(f"unsupported version {envelope['version']} of marketing.lead.submitted")
    try:
        data = _marketing_schema.load(envelope["data"])
    except ValidationError as exc:
        raise Reject(f"invalid marketing lead: {exc.messages}") from None
    now = utcnow()
    data.pop("occurred_at", None)
    lead = _new_lead(currency=settings.default_currency, owner_id=None, team_id=None,
                     created_by=f"marketing:{envelope['source']}", created_at=now, updated_at=now, **data)
    uow.session.add(lead)
    _publish(uow, settings, "lead.created", lead, envelope.get("actor") or envelope["source"])
    return lead
