"""Visits to leads (crm.opportunities.v1 visit.checked_in): the opportunities service plans reps'
visits and calls; one to a lead, once checked in, is logged here on the lead as its activity, under
the id the visit already names (so a replayed event, even under a new event id, logs nothing twice)."""
from __future__ import annotations

import logging

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork
from crmkit.settings import Settings

from .db import Lead, LeadActivity, LeadRepository
from .lifecycle import record_activity
from .people import replica_principal

log = logging.getLogger(__name__)


class _Visit(Schema):
    """What this service needs of the visit (a tolerant reader: the rest is ignored)."""

    class Meta:
        unknown = EXCLUDE

    lead_id = fields.UUID(required=True, allow_none=True)
    activity_id = fields.UUID(required=True, allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(["visit", "call"]))
    outcome = fields.String(required=True, allow_none=True, validate=validate.Length(max=4000))
    checked_in_at = fields.AwareDateTime(required=True)
    next_contact_at = fields.AwareDateTime(required=True, allow_none=True)
    owner_id = fields.String(required=True)


class _CheckedIn(Schema):
    class Meta:
        unknown = EXCLUDE

    visit = fields.Nested(_Visit, required=True)


_checked_in = _CheckedIn()


def log_visit(uow: UnitOfWork, settings: Settings, envelope: dict) -> LeadActivity | None:
    try:
        visit = _checked_in.load(envelope["data"] or {})["visit"]
    except ValidationError as exc:
        raise Reject(f"invalid visit.checked_in: {exc.messages}") from None
    if visit["lead_id"] is None:
        return None  # a visit to an account: the opportunities service logged it there
    if visit["activity_id"] is None:
        raise Reject("visit.checked_in on a lead without the activity id to log it under")
    if uow.session.get(LeadActivity, visit["activity_id"]) is not None:
        return None
    lead = uow.session.get(Lead, visit["lead_id"], with_for_update=True)
    if lead is None or lead.deleted_at is not None:
        log.warning("a visit was checked in on a lead that is gone", extra={"lead_id": str(visit["lead_id"])})
        return None
    actor = envelope.get("actor") or visit["owner_id"]
    # The opportunities service checked this against its copy of the lead, which may lag: the lead
    # passed to another team in between is theirs now, and someone else's visit does not change it.
    who = replica_principal(uow, actor)
    if who is not None and uow.repository(LeadRepository, who).get(lead.id) is None:
        raise Reject(f"the visit's rep ({actor}) no longer holds lead {lead.id}")
    return record_activity(uow, settings, lead, {
        "kind": visit["kind"], "summary": visit["outcome"], "occurred_at": visit["checked_in_at"],
        "next_contact_at": visit["next_contact_at"]}, actor, visit["activity_id"])
