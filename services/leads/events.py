"""What the leads service publishes and consumes on Kafka (CONTRACT §5): the topics, and one payload
schema per event type and version (crmkit.eventschema), apart from the API's schemas. Events go to
other services, not to a caller: a lead's payload is the whole lead (its full score and money),
whoever's request caused it."""
from __future__ import annotations

from marshmallow import fields, validate

from crmkit.directory_events import HANDOVER_COMPLETED, HandoverCompletedV1
from crmkit.eventschema import HIDDEN_FROM_MARKETING, Catalog, Money, Payload
from crmkit.settings import Settings

from . import SERVICE
from .schemas import MarketingLeadSubmittedSchema

LEADS_TOPIC = "crm.leads.v1"
MARKETING_INBOUND_TOPIC = "marketing.leads.inbound.v1"
DIRECTORY_TOPIC = "crm.directory.v1"  # the gateway's; the leads service keeps a replica of users and teams
OPPORTUNITIES_TOPIC = "crm.opportunities.v1"  # the opportunities service's refusals of conversions
LEAD_CONVERSION_REJECTED = "lead.conversion_rejected"
VISIT_CHECKED_IN = "visit.checked_in"  # on a lead: logged here as the lead's activity
MARKETING_LEAD_SUBMITTED = "marketing.lead.submitted"

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {LEADS_TOPIC: 6, MARKETING_INBOUND_TOPIC: 6, DIRECTORY_TOPIC: 3, OPPORTUNITIES_TOPIC: 6}

Time = fields.AwareDateTime  # ISO 8601 with its offset (UTC)


# ---- payloads -------------------------------------------------------------------------------------------
class ScoreReasonV1(Payload):
    rule = fields.String(required=True)
    points = fields.Integer(required=True)
    field = fields.String(allow_none=True, metadata={"description": "absent on reasons stored before they named it"})


class LeadV1(Payload):
    """A lead as other services read it: what is stored, not what one caller may see of it. Fields
    marked x-hidden-from must be left out when the event is shown to those roles."""
    id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"enum": ["new", "contacted", "qualified", "disqualified",
                                                             "converted"]})
    company = fields.String(required=True, allow_none=True)
    contact_name = fields.String(required=True, allow_none=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)
    industry = fields.String(required=True, allow_none=True)
    source = fields.String(required=True)
    campaign = fields.String(required=True, allow_none=True)
    interest = fields.String(required=True, allow_none=True)
    external_id = fields.String(required=True, allow_none=True)
    quoted_price = Money(required=True, allow_none=True, metadata=HIDDEN_FROM_MARKETING)
    estimated_value = Money(required=True, allow_none=True, metadata=HIDDEN_FROM_MARKETING)
    currency = fields.String(required=True)
    score = fields.Integer(required=True, validate=validate.Range(0, 100), metadata={
        **HIDDEN_FROM_MARKETING, "description": "by every scoring rule, money rules included"})
    score_public = fields.Integer(required=True, validate=validate.Range(0, 100), metadata={
        "description": "by the rules that read no money field: the score to show marketing"})
    score_reasons = fields.List(fields.Nested(ScoreReasonV1), required=True, metadata={
        **HIDDEN_FROM_MARKETING, "description": "for marketing, only those whose field is not a money field"})
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    assigned_by_rule = fields.String(required=True, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    last_activity_at = Time(required=True, allow_none=True)
    touches = fields.Integer(required=True)
    conversion_error = fields.String(required=True, allow_none=True)
    converted_at = Time(required=True, allow_none=True)
    account_id = fields.UUID(required=True, allow_none=True)
    contact_id = fields.UUID(required=True, allow_none=True)
    opportunity_id = fields.UUID(required=True, allow_none=True)
    created_by = fields.String(required=True)
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class LeadOnlyV1(Payload):
    lead = fields.Nested(LeadV1, required=True)


class LeadUpdatedV1(LeadOnlyV1):
    changed = fields.List(fields.String(), required=True)
    reason = fields.String(metadata={"description": "conversion_rejected: the lead was rolled back"})


class LeadMergedV1(LeadOnlyV1):
    filled = fields.List(fields.String(), required=True, metadata={"description": "fields the duplicate filled in"})
    via = fields.String(required=True, validate=validate.OneOf(["api", "marketing", "import"]))


class LeadAssignedV1(LeadOnlyV1):
    previous_owner_id = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, validate=validate.OneOf(["rule", "reassigned", "handover"]))
    handover_id = fields.String(allow_none=True)


class DuplicateClaimedV1(Payload):
    lead_id = fields.UUID(required=True)
    claim_id = fields.UUID(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    manager_id = fields.String(required=True, allow_none=True)
    claimed_by = fields.String(required=True)
    via = fields.String(required=True, validate=validate.OneOf(["api", "import"]))


class ConvertedAccountV1(Payload):
    id = fields.UUID(required=True)
    existing = fields.Boolean(required=True, metadata={"description": "an account that already exists"})
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["b2b", "b2c"]))
    industry = fields.String(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)


class ConvertedContactV1(Payload):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    is_primary = fields.Boolean(required=True)


class ConvertedOpportunityV1(Payload):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    amount = Money(required=True)
    currency = fields.String(required=True)
    expected_close_date = fields.Date(required=True)
    region = fields.String(required=True, allow_none=True)
    source_lead_id = fields.UUID(required=True)
    products = fields.List(fields.Dict(), required=True)


class LeadConvertedV1(LeadOnlyV1):
    """What the opportunities service creates, under ids the leads service already gave the user."""
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    account = fields.Nested(ConvertedAccountV1, required=True)
    contact = fields.Nested(ConvertedContactV1, required=True)
    opportunity = fields.Nested(ConvertedOpportunityV1, required=True)


class LeadActivityLoggedV1(Payload):
    lead_id = fields.UUID(required=True)
    activity_id = fields.UUID(required=True)
    kind = fields.String(required=True)
    summary = fields.String(required=True, allow_none=True)
    occurred_at = Time(required=True)
    next_contact_at = Time(required=True, allow_none=True)
    follow_up_due_at = Time(required=True, allow_none=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    company = fields.String(required=True, allow_none=True)


class LeadImportFinishedV1(Payload):
    """A CSV import's end, for whoever uploaded it (the notifications service tells them)."""
    job_id = fields.UUID(required=True)
    requested_by = fields.String(required=True)
    filename = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(["completed", "failed"]))
    rows = fields.Integer(required=True, allow_none=True)
    created = fields.Integer(required=True)
    merged = fields.Integer(required=True)
    claimed = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    failure = fields.String(required=True, allow_none=True)


class RulesUpdatedV1(Payload):
    rules = fields.List(fields.Dict(), required=True)
    version = fields.Integer(required=True)


# ---- what the leads service publishes on crm.leads.v1 ----------------------------------------------------
LEADS = Catalog(SERVICE, LEADS_TOPIC, "Leads: their life from intake to conversion, and the rules that score "
                "and route them.", partitions=TOPIC_PARTITIONS[LEADS_TOPIC])
LEAD = "lead id"
LEADS.define("lead.created", LeadOnlyV1, subject=LEAD, summary="A lead was taken in (API, CSV import or marketing).")
LEADS.define("lead.updated", LeadUpdatedV1, subject=LEAD, summary="A lead's fields changed.")
LEADS.define("lead.merged", LeadMergedV1, subject=LEAD + " (the surviving, older lead)",
             summary="A duplicate was merged into an existing lead by someone who may change it.")
LEADS.define("lead.duplicate_claimed", DuplicateClaimedV1, subject=LEAD,
             summary="Someone brought the prospect of a lead they may not change; nothing was written into it.")
LEADS.define("lead.assigned", LeadAssignedV1, subject=LEAD, summary="A lead got an owner (rule, reassignment, handover).")
LEADS.define("lead.disqualified", LeadOnlyV1, subject=LEAD, summary="A lead was disqualified.")
LEADS.define("lead.deleted", LeadOnlyV1, subject=LEAD, summary="A lead was (soft) deleted.")
LEADS.define("lead.converted", LeadConvertedV1, subject=LEAD,
             summary="A lead was converted: the opportunities service creates the account, contact and deal.")
LEADS.define("activity.logged", LeadActivityLoggedV1, subject=LEAD, summary="A call, visit or e-mail on a lead.")
LEADS.define("lead_import.finished", LeadImportFinishedV1, subject="import job id",
             summary="A CSV import completed (with its counts) or failed (with the reason).")
LEADS.define("scoring_rules.updated", RulesUpdatedV1, subject="rules:scoring", summary="The scoring rules changed.")
LEADS.define("assignment_rules.updated", RulesUpdatedV1, subject="rules:assignment",
             summary="The assignment rules changed.")
LEADS.define(HANDOVER_COMPLETED, HandoverCompletedV1, subject="handover id",
             summary="The leaver's open leads moved to the successor (or the handover failed).")

# ---- what outside marketing systems publish (the leads service reads it) --------------------------------
MARKETING = Catalog("marketing", MARKETING_INBOUND_TOPIC, "Leads submitted by outside marketing systems; "
                    "anything that is not a valid marketing.lead.submitted version 1 is dead-lettered with the "
                    "reason.", partitions=TOPIC_PARTITIONS[MARKETING_INBOUND_TOPIC])
MARKETING.define(MARKETING_LEAD_SUBMITTED, MarketingLeadSubmittedSchema, subject="the campaign's own id of the lead",
                 summary="A prospect from a campaign, an event or a form.")


def lead_event(settings: Settings, event_type: str, lead, *, actor, extra: dict | None = None) -> tuple[str, dict]:
    return LEADS.event(settings, event_type, lead.id, {"lead": lead, **(extra or {})}, actor=actor)


def leads_event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return LEADS.event(settings, event_type, subject, data, actor=actor)
