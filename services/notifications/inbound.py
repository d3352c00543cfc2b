"""The parts of other services' events this service reads, through schemas of its own (services
never import each other): a tolerant reader takes the fields it needs and ignores the rest, so a
producer adding a field changes nothing here. An event missing what it needs is dead-lettered."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from crmkit.consumer import Reject
from crmkit.fields import Text, Timestamp


class _Tolerant(Schema):
    class Meta:
        unknown = EXCLUDE




def Time(**kwargs):  # noqa: N802 - a field factory
    """A time as the APIs take them: years 1900-2999 (a year-1 date would overflow in a time zone)."""
    return Timestamp(**kwargs)


def Id(**kwargs):  # noqa: N802 - a field factory
    """A person's, team's or record's id: at most 64 characters, as stored here."""
    return Text(64, min_length=1, **kwargs)


def Name(**kwargs):  # noqa: N802 - a field factory
    return Text(300, **kwargs)


class Lead(_Tolerant):
    id = Id(required=True)
    company = Name(load_default=None, allow_none=True)
    contact_name = Name(load_default=None, allow_none=True)
    status = Name(required=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    deleted_at = Time(load_default=None, allow_none=True)


class LeadEvent(_Tolerant):
    lead = fields.Nested(Lead, required=True)
    reason = Name(load_default=None, allow_none=True)
    previous_owner_id = Id(load_default=None, allow_none=True)


class LeadActivity(_Tolerant):
    lead_id = Id(required=True)
    kind = Name(required=True)
    summary = Text(2000, load_default=None, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)
    company = Name(load_default=None, allow_none=True)


class DealActivity(_Tolerant):
    account_id = fields.UUID(required=True)
    opportunity_id = fields.UUID(required=True, allow_none=True)
    kind = Name(required=True)
    summary = Text(2000, load_default=None, allow_none=True)
    next_contact_at = Time(required=True, allow_none=True)
    logged_by = Id(required=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)


class Account(_Tolerant):
    id = fields.UUID(required=True)
    name = Name(required=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)


class AccountEvent(_Tolerant):
    account = fields.Nested(Account, required=True)


class Opportunity(_Tolerant):
    """Only what a reminder needs: closed or not, whose, and what it is called if the event says."""
    id = fields.UUID(required=True)
    name = Name(load_default=None, allow_none=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)
    status = Name(required=True)


class OpportunityEvent(_Tolerant):
    opportunity = fields.Nested(Opportunity, required=True)


class CollisionSide(_Tolerant):
    opportunity_id = fields.UUID(required=True)
    name = Name(required=True)
    owner_id = Id(required=True, allow_none=True)
    team_id = Id(required=True, allow_none=True)
    manager_id = Id(required=True, allow_none=True)


class Collision(_Tolerant):
    opportunities = fields.List(fields.Nested(CollisionSide), required=True, validate=validate.Length(max=21))


class Approval(_Tolerant):
    id = fields.UUID(required=True)
    order_id = fields.UUID(required=True)
    order_number = Name(required=True)
    owner_id = Id(required=True, allow_none=True)
    status = Name(required=True)
    current_approver_id = Id(required=True, allow_none=True)
    current_level = Name(required=True, allow_none=True)
    requested_by = Id(required=True)


class ApprovalEvent(_Tolerant):
    approval = fields.Nested(Approval, required=True)
    decision = Name(load_default=None)
    decided_by = Id(load_default=None, allow_none=True)
    comment = Text(2000, load_default=None, allow_none=True)


class Alert(_Tolerant):
    id = Id(required=True)
    kind = Name(required=True)
    subject_type = Name(required=True)
    subject_id = Id(required=True)
    metric = Text(40, required=True)
    period = Text(20, min_length=4, required=True)
    day_of_period = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=366))
    attainment = Name(required=True)
    below_pct = Name(load_default=None, allow_none=True)
    rep_id = Id(required=True, allow_none=True)
    manager_id = Id(required=True, allow_none=True)
    executive_ids = fields.List(Id(), required=True, validate=validate.Length(max=200))


class AlertEvent(_Tolerant):
    alert = fields.Nested(Alert, required=True)


class HandoverCompleted(_Tolerant):
    handover_id = Id(required=True)
    service = Name(required=True)
    moved = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10**9))
    from_user_id = Id(required=True)
    to_user_id = Id(required=True)
    status = Name(required=True)


class Visit(_Tolerant):
    id = fields.UUID(required=True)
    owner_id = Id(required=True)
    team_id = Id(required=True, allow_none=True)
    account_id = fields.UUID(required=True, allow_none=True)
    lead_id = fields.UUID(required=True, allow_none=True)
    kind = Name(required=True)
    planned_at = Time(required=True)
    day = fields.Date(required=True)
    purpose = Text(2000, load_default=None, allow_none=True)


class VisitEvent(_Tolerant):
    visit = fields.Nested(Visit, required=True)


class DailyReport(_Tolerant):
    id = fields.UUID(required=True)
    owner_id = Id(required=True)
    team_id = Id(required=True, allow_none=True)
    day = fields.Date(required=True)


class DailyReportEvent(_Tolerant):
    report = fields.Nested(DailyReport, required=True)
    manager_id = Id(required=True, allow_none=True)
    comment = Text(4000, load_default=None, allow_none=True)


_schemas: dict[type, Schema] = {}


def read(schema: type[Schema], envelope: dict) -> dict:
    """The event's data through `schema`, or Reject (dead-lettered with the reason)."""
    loader = _schemas.get(schema) or _schemas.setdefault(schema, schema())
    try:
        return loader.load(envelope.get("data") or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope.get('type')}: {exc.messages}") from None


class ImportFinished(_Tolerant):
    job_id = fields.UUID(required=True)
    requested_by = Id(required=True)
    filename = Name(load_default=None, allow_none=True)
    status = Name(required=True)
    created = fields.Integer(load_default=0)
    merged = fields.Integer(load_default=0)
    claimed = fields.Integer(load_default=0)
    rejected = fields.Integer(load_default=0)
    failure = Text(2000, load_default=None, allow_none=True)
