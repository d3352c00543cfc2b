"""marshmallow schemas: what the leads API accepts and returns, and what inbound events carry."""
from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from crmkit.fields import Money, Text, Timestamp
from crmkit.pagination import DEFAULT_LIMIT, MAX_LIMIT

from .domain import SOURCES, STATUSES

# Marketing sees every lead but no money (CONTRACT §2).
LeadMoney = lambda **kw: Money(hidden_from=("marketing",), **kw)  # noqa: E731
PHONE = validate.Regexp(r"^[0-9+()\-\s.]{3,50}$", error="digits, spaces and + ( ) - . only")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="an ISO 4217 code such as CNY or USD")


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


class ScoreReasonSchema(Schema):
    rule = fields.String()
    points = fields.Integer()


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
    score = fields.Integer()
    score_reasons = fields.List(fields.Nested(ScoreReasonSchema))
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    created_by = fields.String()
    follow_up_due_at = fields.AwareDateTime(allow_none=True)
    last_activity_at = fields.AwareDateTime(allow_none=True)
    touches = fields.Integer()
    external_id = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class LeadCreatedSchema(LeadSchema):
    merged = fields.Boolean()


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
    sort = Text(40, load_default="-created_at")
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Text(1000)


class MarketingLeadSubmittedSchema(_ProspectFields):
    """`data` of marketing.lead.submitted (CONTRACT §5). Outside systems may add fields; we ignore them."""

    class Meta:
        unknown = EXCLUDE

    external_id = Text(200, min_length=1, required=True)
    source = fields.String(load_default="marketing", validate=validate.OneOf(SOURCES))
    occurred_at = Timestamp(allow_none=True)

    @validates_schema
    def _someone_to_call(self, data, **_):
        _needs_someone_to_call(data)


lead_schema = LeadSchema()
