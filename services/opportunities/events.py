"""What the opportunities service publishes and consumes on Kafka (CONTRACT §5): the topics, and one
payload schema per event type and version (crmkit.eventschema), apart from the API's schemas. Events
go to other services, not to a caller: a deal's payload is what is stored, whoever caused it."""
from __future__ import annotations

from marshmallow import fields, validate

from crmkit.directory_events import HANDOVER_COMPLETED, HandoverCompletedV1
from crmkit.eventschema import Catalog, Money, Payload
from crmkit.settings import Settings

from . import SERVICE
from .domain import MEMBER_ROLES

OPPORTUNITIES_TOPIC = "crm.opportunities.v1"
LEADS_TOPIC = "crm.leads.v1"            # lead.converted creates accounts, contacts and opportunities
ORDERS_TOPIC = "crm.orders.v1"          # order.confirmed / order.paid keep account tiers current
DIRECTORY_TOPIC = "crm.directory.v1"    # the replica of users and teams, and handover requests

LEAD_CONVERTED = "lead.converted"
# Published when a lead.converted cannot be applied (the account is gone or not the owner's to sell
# into); the leads service rolls the lead back with the reason.
LEAD_CONVERSION_REJECTED = "lead.conversion_rejected"
REVENUE_EVENTS = frozenset({"order.confirmed", "order.paid"})
ORDER_CANCELLED = "order.cancelled"

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {OPPORTUNITIES_TOPIC: 6, LEADS_TOPIC: 6, ORDERS_TOPIC: 6, DIRECTORY_TOPIC: 3}


Time = fields.AwareDateTime  # ISO 8601 with its offset (UTC)


# ---- payloads -------------------------------------------------------------------------------------------
class MemberV1(Payload):
    user_id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(MEMBER_ROLES))


class AccountV1(Payload):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["b2b", "b2c"]))
    industry = fields.String(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)
    tier = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    team = fields.List(fields.Nested(MemberV1), required=True, metadata={"description": "the virtual team"})
    created_by = fields.String(required=True)
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class AccountEventV1(Payload):
    account = fields.Nested(AccountV1, required=True)
    source_lead_id = fields.UUID(metadata={"description": "the converted lead that created the account"})


class OwnerChangeV1(Payload):
    """What a change of owner (a handover) adds to an *.updated event."""
    previous_owner_id = fields.String(allow_none=True)
    reason = fields.String(validate=validate.OneOf(["handover"]))
    handover_id = fields.String(allow_none=True)


class AccountUpdatedV1(AccountEventV1, OwnerChangeV1):
    changed = fields.List(fields.String(), required=True)


class AccountRefV1(Payload):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)


class AccountTierChangedV1(Payload):
    account_id = fields.UUID(required=True)
    previous = fields.String(required=True, data_key="from", attribute="from")
    to = fields.String(required=True)
    revenue_12m = Money(required=True)
    account = fields.Nested(AccountRefV1, required=True)


class ContactV1(Payload):
    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    name = fields.String(required=True)
    title = fields.String(required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    is_primary = fields.Boolean(required=True)
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class ContactEventV1(Payload):
    contact = fields.Nested(ContactV1, required=True)
    changed = fields.List(fields.String(), metadata={"description": "on contact.updated"})


class ProductLineV1(Payload):
    sku = fields.String(required=True)
    qty = fields.Integer(required=True)
    unit_price = Money(required=True)


class OpportunityV1(Payload):
    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    team = fields.List(fields.Nested(MemberV1), required=True, metadata={"description": "the virtual team"})
    stage = fields.String(required=True)
    probability = fields.Integer(required=True, validate=validate.Range(0, 100))
    amount = Money(required=True)
    currency = fields.String(required=True)
    expected_close_date = fields.Date(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)
    products = fields.List(fields.Nested(ProductLineV1), required=True)
    status = fields.String(required=True, validate=validate.OneOf(["open", "won", "lost"]))
    lost_reason = fields.String(required=True, allow_none=True)
    source_lead_id = fields.UUID(required=True, allow_none=True)
    checklist_done = fields.Dict(keys=fields.String(), values=fields.Boolean(), required=True,
                                 metadata={"description": "checklist items ticked, by key"})
    expense_total = Money(required=True)
    stage_entered_at = Time(required=True)
    closed_at = Time(required=True, allow_none=True)
    created_by = fields.String(required=True)
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class OpportunityEventV1(Payload):
    opportunity = fields.Nested(OpportunityV1, required=True)


class ExpenseV1(Payload):
    id = fields.UUID(required=True)
    category = fields.String(required=True)
    amount = Money(required=True)


class OpportunityUpdatedV1(OpportunityEventV1, OwnerChangeV1):
    changed = fields.List(fields.String(), required=True)
    expense = fields.Nested(ExpenseV1, metadata={"description": "the expense that changed expense_total"})


class StageChangedV1(OpportunityEventV1):
    previous = fields.String(required=True, data_key="from", attribute="from")
    to = fields.String(required=True)
    time_in_stage_seconds = fields.Integer(required=True)
    entered_previous_at = Time(required=True)


class OpportunityLostV1(OpportunityEventV1):
    reason = fields.String(required=True, allow_none=True)


class CollisionSideV1(Payload):
    opportunity_id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    manager_id = fields.String(required=True, allow_none=True)


class CollisionMatchV1(CollisionSideV1):
    score = fields.Float(required=True)
    signals = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)
    reasons = fields.List(fields.String(), required=True)


class CollisionDetectedV1(Payload):
    """Signals and reasons describe both deals: tell them only to whoever may see both."""
    opportunity = fields.Nested(CollisionSideV1, required=True)
    matches = fields.List(fields.Nested(CollisionMatchV1), required=True, metadata={"description": "the best 20"})
    more = fields.Integer(required=True, metadata={"description": "new collisions beyond those listed"})
    current_ids = fields.List(fields.UUID(), required=True,
                              metadata={"description": "every deal it collides with now, at most 20"})
    opportunities = fields.List(fields.Nested(CollisionSideV1), required=True, metadata={
        "description": "this deal first, then the matches"})
    owner_ids = fields.List(fields.String(), required=True)
    manager_ids = fields.List(fields.String(), required=True)


class CollisionDismissedV1(Payload):
    opportunity_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(equal=2))
    dismissed_by = fields.String(required=True)
    reason = fields.String(required=True, allow_none=True)


class ConversionRejectedV1(Payload):
    lead_id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    contact_id = fields.UUID(required=True)
    opportunity_id = fields.UUID(required=True)
    reason = fields.String(required=True)


class ActivityLoggedV1(Payload):
    activity_id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    opportunity_id = fields.UUID(required=True, allow_none=True)
    kind = fields.String(required=True)
    summary = fields.String(required=True, allow_none=True)
    occurred_at = Time(required=True)
    next_contact_at = Time(required=True, allow_none=True)
    logged_by = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    member_ids = fields.List(fields.String(), required=True)


class PipelineUpdatedV1(Payload):
    stages = fields.List(fields.Dict(), required=True)
    version = fields.Integer(required=True)


class OpportunitiesHandoverCompletedV1(HandoverCompletedV1):
    opportunities = fields.Integer(metadata={"description": "open deals moved"})
    accounts = fields.Integer(metadata={"description": "accounts moved"})
    visits = fields.Integer(metadata={"description": "planned visits moved"})


class VisitV1(Payload):
    """A planned visit or call, as stored."""
    id = fields.UUID(required=True)
    owner_id = fields.String(required=True)
    team_id = fields.String(required=True, allow_none=True)
    account_id = fields.UUID(required=True, allow_none=True)
    lead_id = fields.UUID(required=True, allow_none=True)
    contact_id = fields.UUID(required=True, allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(["visit", "call"]))
    planned_at = Time(required=True)
    day = fields.Date(required=True, metadata={"description": "the planned day where the company works"})
    purpose = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(["planned", "done", "missed", "rescheduled"]))
    checked_in_at = Time(required=True, allow_none=True)
    outcome = fields.String(required=True, allow_none=True)
    next_contact_at = Time(required=True, allow_none=True)
    activity_id = fields.UUID(required=True, allow_none=True, metadata={
        "description": "the activity logged on the account (a lead's is logged by the leads service)"})
    reason = fields.String(required=True, allow_none=True)
    rescheduled_to = fields.UUID(required=True, allow_none=True)
    rescheduled_from = fields.UUID(required=True, allow_none=True)
    created_by = fields.String(required=True)
    version = fields.Integer(required=True)


class VisitEventV1(Payload):
    visit = fields.Nested(VisitV1, required=True)
    manager_id = fields.String(required=True, allow_none=True, metadata={"description": "the owner's manager"})


class VisitCheckedInV1(VisitEventV1):
    """The location is the rep's own; it goes with the activity, not to everyone."""
    latitude = fields.Float(required=True, allow_none=True)
    longitude = fields.Float(required=True, allow_none=True)
    address = fields.String(required=True, allow_none=True)


class VisitMissedV1(VisitEventV1):
    automatic = fields.Boolean(required=True, metadata={"description": "not checked in by the end of its day"})


class DailyReportV1(Payload):
    id = fields.UUID(required=True)
    owner_id = fields.String(required=True)
    team_id = fields.String(required=True, allow_none=True)
    day = fields.Date(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["submitted", "reviewed"]))
    submitted_at = Time(required=True, allow_none=True)
    reviewed_at = Time(required=True, allow_none=True)
    reviewed_by = fields.String(required=True, allow_none=True)


class DailyReportEventV1(Payload):
    """No figures and no notes: whoever is told reads the report through the API, as they may."""
    report = fields.Nested(DailyReportV1, required=True)
    manager_id = fields.String(required=True, allow_none=True, metadata={"description": "the owner's manager"})
    comment = fields.String(allow_none=True, metadata={"description": "on daily_report.reviewed"})


# ---- what the opportunities service publishes on crm.opportunities.v1 ------------------------------------
OPPORTUNITIES = Catalog(SERVICE, OPPORTUNITIES_TOPIC, "Accounts, contacts and opportunities: the pipeline, "
                        "collisions between reps' deals, and answers to conversions and handovers.",
                        partitions=TOPIC_PARTITIONS[OPPORTUNITIES_TOPIC])
ACCOUNT, OPPORTUNITY = "account id", "opportunity id"
for _kind, _summary in (("account.created", "An account was created (by hand or by a lead's conversion)."),
                        ("account.deleted", "An account was (soft) deleted.")):
    OPPORTUNITIES.define(_kind, AccountEventV1, subject=ACCOUNT, summary=_summary)
OPPORTUNITIES.define("account.updated", AccountUpdatedV1, subject=ACCOUNT, summary="An account changed.")
OPPORTUNITIES.define("account.tier_changed", AccountTierChangedV1, subject=ACCOUNT,
                     summary="An account's tier (A/B/C by trailing 12 months of revenue) changed.")
for _kind in ("contact.created", "contact.updated", "contact.deleted"):
    OPPORTUNITIES.define(_kind, ContactEventV1, subject=ACCOUNT + " (a customer's events stay in order)",
                         summary=f"A contact was {_kind.split('.')[1]}.")
for _kind, _summary in (("opportunity.created", "A deal was opened."),
                        ("opportunity.deleted", "A deal was (soft) deleted."),
                        ("opportunity.won", "A deal was won.")):
    OPPORTUNITIES.define(_kind, OpportunityEventV1, subject=OPPORTUNITY, summary=_summary)
OPPORTUNITIES.define("opportunity.updated", OpportunityUpdatedV1, subject=OPPORTUNITY, summary="A deal changed.")
OPPORTUNITIES.define("opportunity.stage_changed", StageChangedV1, subject=OPPORTUNITY,
                     summary="A deal moved to another stage of the pipeline.")
OPPORTUNITIES.define("opportunity.lost", OpportunityLostV1, subject=OPPORTUNITY, summary="A deal was lost.")
OPPORTUNITIES.define("opportunity.collision_detected", CollisionDetectedV1,
                     subject="the opportunity whose write found the collisions",
                     summary="One per write that found new collisions with other reps' deals.")
OPPORTUNITIES.define("opportunity.collision_dismissed", CollisionDismissedV1,
                     subject="the opportunity named in the URL",
                     summary="Someone who may change both deals decided they are not one deal.")
OPPORTUNITIES.define(LEAD_CONVERSION_REJECTED, ConversionRejectedV1, subject="lead id",
                     summary="A lead.converted that cannot be applied; the leads service rolls the lead back.")
OPPORTUNITIES.define("activity.logged", ActivityLoggedV1, subject="account or opportunity id",
                     summary="A call, visit or e-mail on an account or a deal.")
OPPORTUNITIES.define("pipeline.updated", PipelineUpdatedV1, subject="pipeline", summary="The pipeline's stages changed.")
VISIT = "visit id"
OPPORTUNITIES.define("visit.planned", VisitEventV1, subject=VISIT,
                     summary="A rep (or their manager) planned a visit or call, or a rescheduled one's new time.")
OPPORTUNITIES.define("visit.checked_in", VisitCheckedInV1, subject=VISIT,
                     summary="A planned visit was done; on a lead, the leads service logs the activity.")
OPPORTUNITIES.define("visit.missed", VisitMissedV1, subject=VISIT,
                     summary="A planned visit was missed: said so, or not checked in by the end of its day.")
OPPORTUNITIES.define("visit.rescheduled", VisitEventV1, subject=VISIT,
                     summary="A planned visit moved; its new time is a visit.planned of its own.")
OPPORTUNITIES.define("daily_report.submitted", DailyReportEventV1, subject="daily report id",
                     summary="A rep submitted the day's report (then it changes only by comments).")
OPPORTUNITIES.define("daily_report.reviewed", DailyReportEventV1, subject="daily report id",
                     summary="A manager reviewed a report, with a comment.")
OPPORTUNITIES.define(HANDOVER_COMPLETED, OpportunitiesHandoverCompletedV1, subject="handover id",
                     summary="The leaver's open deals and their accounts moved to the successor (or it failed).")


def event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return OPPORTUNITIES.event(settings, event_type, subject, data, actor=actor)
