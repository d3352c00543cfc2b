"""marshmallow schemas: what the leads API accepts and returns, and what inbound events carry."""
from __future__ import annotations

import math

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing, validate, validates_schema

from crmkit.activities import ActivityFields
from crmkit.fields import CURRENCY, PHONE, Flag, Money, Text, Timestamp, WholeNumber, viewer_role
from crmkit.pagination import DEFAULT_LIMIT, MAX_LIMIT, sort_field

from .assignment import STRATEGIES
from .db import SORTABLE
from .domain import SOURCES, STATUSES
from .scoring import OPS, SCORABLE_FIELDS, public_reasons

# Marketing sees every lead but no money (CONTRACT §2).
MONEY_HIDDEN_FROM = ("marketing",)
LeadMoney = lambda **kw: Money(hidden_from=MONEY_HIDDEN_FROM, **kw)  # noqa: E731


class _ProspectFields(Schema):
    """Who the prospect is and what they want: the same on every way in (API, marketing topic, import)."""

    company = Text(200, allow_none=True)
    contact_name = Text(200, allow_none=True)
    email = fields.Email(allow_none=True, validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, validate=PHONE)
    region = Text(100, allow_none=True)
    industry = Text(100, allow_none=True)
    campaign = Text(200, allow_none=True)
    interest = Text(4000, allow_none=True)
    estimated_value = LeadMoney(allow_none=True)


def _needs_someone_to_call(data: dict) -> None:
    if not (data.get("company") or data.get("contact_name")):
        raise ValidationError("a lead needs a company or a contact name", "company")


class _LeadFields(_ProspectFields):
    """Fields a client may write. Server-kept fields (owner_id, team_id, score...) are not here,
    and unknown fields are rejected, so they cannot be mass-assigned."""

    class Meta:
        unknown = RAISE

    source = fields.String(validate=validate.OneOf(SOURCES))
    quoted_price = LeadMoney(allow_none=True)
    currency = fields.String(validate=CURRENCY)
    follow_up_due_at = Timestamp(allow_none=True)
    external_id = Text(200, allow_none=True)


class LeadCreateSchema(_LeadFields):
    status = fields.String(validate=validate.OneOf(("new", "contacted", "qualified")))

    @validates_schema
    def _someone_to_call(self, data, **_):
        _needs_someone_to_call(data)


class LeadPatchSchema(_LeadFields):
    status = fields.String(validate=validate.OneOf(STATUSES))


def _score(lead) -> int:
    # A role that may not read money sees the score its own fields earn (CONTRACT §2).
    if isinstance(lead, dict):  # a reply that names a lead without showing it
        return lead.get("score", missing)
    return lead.score_public if viewer_role() in MONEY_HIDDEN_FROM else lead.score


def _score_reasons(lead) -> list[dict]:
    if isinstance(lead, dict):
        return lead.get("score_reasons", missing)
    reasons = lead.score_reasons or []
    return public_reasons(reasons) if viewer_role() in MONEY_HIDDEN_FROM else reasons


class LeadSchema(Schema):
    id = fields.UUID()
    company = fields.String(allow_none=True)
    contact_name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    industry = fields.String(allow_none=True)
    source = fields.String()
    campaign = fields.String(allow_none=True)
    interest = fields.String(allow_none=True)
    quoted_price = LeadMoney(allow_none=True)
    estimated_value = LeadMoney(allow_none=True)
    currency = fields.String()
    status = fields.String()
    score = fields.Function(_score, metadata={"type": "integer", "minimum": 0, "maximum": 100,
                                              "description": "without money rules for roles that may not read money"})
    score_reasons = fields.Function(_score_reasons, metadata={
        "type": "array", "items": {"type": "object", "properties": {
            "rule": {"type": "string"}, "points": {"type": "integer"}, "field": {"type": "string"}}}})
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    conversion_error = fields.String(allow_none=True, metadata={
        "description": "why the last conversion was refused (the lead was rolled back)"})
    created_by = fields.String()
    follow_up_due_at = fields.AwareDateTime(allow_none=True)
    last_activity_at = fields.AwareDateTime(allow_none=True)
    touches = fields.Integer()
    external_id = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()
    assigned_by_rule = fields.String(allow_none=True)
    converted_at = fields.AwareDateTime(allow_none=True)
    account_id = fields.UUID(allow_none=True)
    contact_id = fields.UUID(allow_none=True)
    opportunity_id = fields.UUID(allow_none=True)


class LeadCreatedSchema(LeadSchema):
    merged = Flag()
    # A duplicate of a lead the caller may not change: only its id, its owner and whom to ask come
    # back, never its contents, and nothing the caller brought was written into it.
    owned_elsewhere = Flag()
    claimed = Flag(metadata={"description": "recorded as a duplicate claim for the lead's owner"})
    claim_id = fields.UUID()
    manager_id = fields.String(allow_none=True, metadata={"description": "whom to ask: the lead's team manager"})


class DuplicateClaimSchema(Schema):
    id = fields.UUID()
    lead_id = fields.UUID()
    claimed_by = fields.String()
    claimed_role = fields.String(allow_none=True)
    via = fields.String(metadata={"description": "api or import"})
    brought = fields.Dict(metadata={"description": "the fields the claimant submitted"})
    created_at = fields.AwareDateTime()


class DuplicateClaimPageSchema(Schema):
    items = fields.List(fields.Nested(DuplicateClaimSchema))
    next_cursor = fields.String(allow_none=True)


class LeadPageSchema(Schema):
    items = fields.List(fields.Nested(LeadSchema))
    next_cursor = fields.String(allow_none=True)


class LeadListArgsSchema(Schema):
    class Meta:
        unknown = RAISE  # a misspelt filter must not silently return everything

    status = fields.String(validate=validate.OneOf(STATUSES))
    owner_id = Text(64)
    team_id = Text(64)
    region = Text(100)
    industry = Text(100)
    source = fields.String(validate=validate.OneOf(SOURCES))
    min_score = fields.Integer(validate=validate.Range(min=0, max=100))
    q = Text(200)
    account_id = fields.UUID(metadata={"description": "leads converted into this account"})
    company = Text(200, metadata={"description": "same company, as dedupe normalizes names (legal suffixes, "
                                                 "branch markers, width and case ignored)"})
    sort = sort_field(SORTABLE)
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Text(1000)


class MarketingLeadSubmittedSchema(_ProspectFields):
    """`data` of marketing.lead.submitted (CONTRACT §5). Outside systems may add fields; we ignore them."""

    class Meta:
        unknown = EXCLUDE

    external_id = Text(200, min_length=1, required=True)
    source = fields.String(load_default="marketing", validate=validate.OneOf(SOURCES))
    occurred_at = Timestamp(allow_none=True)
    # Outside systems may write amounts as JSON numbers; the API takes decimal strings only.
    estimated_value = LeadMoney(allow_none=True, strings_only=False)

    @validates_schema
    def _someone_to_call(self, data, **_):
        _needs_someone_to_call(data)


class ActivitySchema(ActivityFields):
    lead_id = fields.UUID()


class ActivityPageSchema(Schema):
    items = fields.List(fields.Nested(ActivitySchema))
    next_cursor = fields.String(allow_none=True)


class ScoringRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1, required=True)
    field = fields.String(required=True, validate=validate.OneOf(SCORABLE_FIELDS))
    op = fields.String(required=True, validate=validate.OneOf(OPS))
    value = fields.Raw(load_default=None, allow_none=True)
    points = WholeNumber(required=True, validate=validate.Range(min=-100, max=100))

    @validates_schema
    def _value_fits_op(self, data, **_):
        op, value = data["op"], data.get("value")
        if op == "in" and not (isinstance(value, list) and value and all(isinstance(v, str | int) for v in value)):
            raise ValidationError("'in' needs a non-empty list of strings or numbers", "value")
        if op in ("gte", "lte") and (isinstance(value, bool) or not isinstance(value, int | float)
                                     or not math.isfinite(value)):
            raise ValidationError(f"'{op}' needs a finite number", "value")
        if op == "eq" and not (isinstance(value, str) or (isinstance(value, int | float) and math.isfinite(value))):
            raise ValidationError("'eq' needs a string or a finite number", "value")
        if op == "in" and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ValidationError("'in' needs finite numbers", "value")


def _unique_names(rules: list[dict]) -> None:
    names = [r["name"] for r in rules]
    if len(names) != len(set(names)):
        raise ValidationError("rule names must be unique", "rules")


def _rules_document(rule_schema: type[Schema], name: str) -> type[Schema]:
    """A rules document (PUT whole, with If-Match): an ordered list of uniquely named rules."""

    class RulesDocument(Schema):
        class Meta:
            unknown = RAISE

        rules = fields.List(fields.Nested(rule_schema), required=True, validate=validate.Length(max=200))
        version = fields.Integer(dump_only=True)

        @validates_schema
        def _unique(self, data, **_):
            _unique_names(data["rules"])

    RulesDocument.__name__ = RulesDocument.__qualname__ = name  # the name in the OpenAPI spec
    return RulesDocument


ScoringRulesSchema = _rules_document(ScoringRuleSchema, "ScoringRulesSchema")


class AssignmentMatchSchema(Schema):
    class Meta:
        unknown = RAISE

    region = fields.Raw(allow_none=True)  # a value or a list of values
    industry = fields.Raw(allow_none=True)
    source = fields.Raw(allow_none=True)
    min_score = WholeNumber(allow_none=True, validate=validate.Range(min=0, max=100))

    @validates_schema
    def _strings(self, data, **_):
        for name in ("region", "industry", "source"):
            value = data.get(name)
            values = value if isinstance(value, list) else [value]
            if value is not None and not all(isinstance(v, str) and 0 < len(v) <= 100 for v in values):
                raise ValidationError("a string or a list of strings", name)


class AssignToSchema(Schema):
    class Meta:
        unknown = RAISE

    team_id = Text(64, min_length=1)
    user_id = Text(64, min_length=1)

    @validates_schema
    def _exactly_one(self, data, **_):
        if len(data) != 1:
            raise ValidationError("give exactly one of team_id or user_id")


class AssignmentRuleSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1, required=True)
    match = fields.Nested(AssignmentMatchSchema, load_default=dict)
    assign_to = fields.Nested(AssignToSchema, required=True)
    strategy = fields.String(load_default="round_robin", validate=validate.OneOf(STRATEGIES))


AssignmentRulesSchema = _rules_document(AssignmentRuleSchema, "AssignmentRulesSchema")


class ReassignSchema(AssignToSchema):
    pass


class ConvertSchema(Schema):
    class Meta:
        unknown = RAISE

    opportunity_name = Text(200, min_length=1, required=True)
    amount = Money(required=True)
    currency = fields.String(validate=CURRENCY)
    expected_close_date = fields.Date(required=True)
    account_id = fields.UUID(allow_none=True)


class ConvertedSchema(Schema):
    account_id = fields.UUID()
    contact_id = fields.UUID()
    opportunity_id = fields.UUID()


class ImportAcceptedSchema(Schema):
    job_id = fields.UUID()


class ImportRowErrorSchema(Schema):
    row = fields.Integer()
    errors = fields.Dict()


class ImportJobSchema(Schema):
    job_id = fields.UUID(attribute="id")
    status = fields.String()
    filename = fields.String(allow_none=True)
    rows = fields.Integer(allow_none=True)
    rows_done = fields.Integer()
    created = fields.Integer()
    merged = fields.Integer(metadata={"description": "rows merged into leads the importer may change"})
    claimed = fields.Integer(metadata={
        "description": "rows whose prospect is already another owner's lead: recorded as duplicate claims for "
                       "its owner; nothing was written into it"})
    rejected = fields.Integer()
    errors = fields.List(fields.Nested(ImportRowErrorSchema))
    error_count = fields.Integer()
    failure = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    finished_at = fields.AwareDateTime(allow_none=True)


class ImportRowSchema(_ProspectFields):
    """One CSV row, after its headers were mapped to field names (see imports.py)."""

    class Meta:
        unknown = EXCLUDE

    source = fields.String(load_default="import", validate=validate.OneOf(SOURCES))
    quoted_price = Money(allow_none=True)
    external_id = Text(200, allow_none=True)

    @validates_schema
    def _someone_to_call(self, data, **_):
        _needs_someone_to_call(data)


lead_schema = LeadSchema()


class LeadFunnelSchema(Schema):
    """Leads created in the period and visible to the caller, by how far they got."""

    period = fields.String()
    start = fields.DateTime()
    end = fields.DateTime()
    leads = fields.Integer(metadata={"description": "created in the period (deleted ones excluded)"})
    contacted = fields.Integer(metadata={"description": "got past new: contacted, qualified or converted"})
    qualified = fields.Integer(metadata={"description": "qualified or converted"})
    converted = fields.Integer()
    disqualified = fields.Integer()
