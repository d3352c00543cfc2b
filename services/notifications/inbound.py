"""The parts of other services' events this service reads, through schemas of its own (services
never import each other): a tolerant reader takes the fields it needs and ignores the rest, so a
producer adding a field changes nothing here. An event missing what it needs is dead-lettered."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields

from crmkit.consumer import Reject


class _Tolerant(Schema):
    class Meta:
        unknown = EXCLUDE


Time = fields.AwareDateTime


class Lead(_Tolerant):
    id = fields.String(required=True)
    company = fields.String(load_default=None, allow_none=True)
    contact_name = fields.String(load_default=None, allow_none=True)
    status = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    deleted_at = Time(load_default=None, allow_none=True)


class LeadEvent(_Tolerant):
    lead = fields.Nested(Lead, required=True)
    reason = fields.String(load_default=None, allow_none=True)
    previous_owner_id = fields.String(load_default=None, allow_none=True)


class LeadActivity(_Tolerant):
    lead_id = fields.String(required=True)
    kind = fields.String(required=True)
    summary = fields.String(load_default=None, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    company = fields.String(load_default=None, allow_none=True)


class DealActivity(_Tolerant):
    account_id = fields.UUID(required=True)
    opportunity_id = fields.UUID(required=True, allow_none=True)
    kind = fields.String(required=True)
    summary = fields.String(load_default=None, allow_none=True)
    next_contact_at = Time(required=True, allow_none=True)
    logged_by = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)


class Account(_Tolerant):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)


class AccountEvent(_Tolerant):
    account = fields.Nested(Account, required=True)


class Opportunity(_Tolerant):
    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)


class OpportunityEvent(_Tolerant):
    opportunity = fields.Nested(Opportunity, required=True)


class CollisionSide(_Tolerant):
    opportunity_id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    manager_id = fields.String(required=True, allow_none=True)


class Collision(_Tolerant):
    opportunities = fields.List(fields.Nested(CollisionSide), required=True)


class Approval(_Tolerant):
    id = fields.UUID(required=True)
    order_id = fields.UUID(required=True)
    order_number = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)
    current_approver_id = fields.String(required=True, allow_none=True)
    current_level = fields.String(required=True, allow_none=True)
    requested_by = fields.String(required=True)


class ApprovalEvent(_Tolerant):
    approval = fields.Nested(Approval, required=True)
    decision = fields.String(load_default=None)
    decided_by = fields.String(load_default=None)
    comment = fields.String(load_default=None, allow_none=True)


class Alert(_Tolerant):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    subject_type = fields.String(required=True)
    subject_id = fields.String(required=True)
    metric = fields.String(required=True)
    period = fields.String(required=True)
    day_of_period = fields.Integer(required=True)
    attainment = fields.String(required=True)
    below_pct = fields.String(load_default=None, allow_none=True)
    rep_id = fields.String(required=True, allow_none=True)
    manager_id = fields.String(required=True, allow_none=True)
    executive_ids = fields.List(fields.String(), required=True)


class AlertEvent(_Tolerant):
    alert = fields.Nested(Alert, required=True)


class HandoverCompleted(_Tolerant):
    handover_id = fields.String(required=True)
    service = fields.String(required=True)
    moved = fields.Integer(required=True)
    from_user_id = fields.String(required=True)
    to_user_id = fields.String(required=True)
    status = fields.String(required=True)


_schemas: dict[type, Schema] = {}


def read(schema: type[Schema], envelope: dict) -> dict:
    """The event's data through `schema`, or Reject (dead-lettered with the reason)."""
    loader = _schemas.get(schema) or _schemas.setdefault(schema, schema())
    try:
        return loader.load(envelope.get("data") or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope.get('type')}: {exc.messages}") from None
