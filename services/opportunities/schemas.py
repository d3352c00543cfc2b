"""marshmallow schemas: what the opportunities API accepts and returns (the reports' are in
report_schemas.py), and what it reads from other services' events. Server-kept fields (owner,
team, stage, status, tier, version...) are not in the create/patch schemas, and unknown fields are
refused, so nothing is mass-assigned."""
from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from crmkit.activities import ActivityFields
from crmkit.fields import CURRENCY, PHONE, Day, Flag, Money, Text, WholeNumber
from crmkit.pagination import PageArgsSchema, page_schema, sort_field

from .db import ACCOUNT_SORTABLE, OPPORTUNITY_SORTABLE
from .domain import ACCOUNT_TYPES, EXPENSE_CATEGORIES, MEMBER_ROLES, STATUSES, TIERS

SKU = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$", error="letters, digits, . _ - (up to 64)")



# ---- accounts ---------------------------------------------------------------------------------------
class AccountWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1)
    type = fields.String(validate=validate.OneOf(ACCOUNT_TYPES))
    industry = Text(100, allow_none=True)
    region = Text(100, allow_none=True)


class AccountCreateSchema(AccountWriteSchema):
    name = Text(200, min_length=1, required=True)
    owner_id = Text(64, metadata={"description": "managers, executives and admins only: give it to someone"})


class MemberSchema(Schema):
    class Meta:
        unknown = RAISE

    user_id = Text(64, min_length=1, required=True)
    role = fields.String(required=True, validate=validate.OneOf(MEMBER_ROLES))


class TeamSchema(Schema):
    """PUT /accounts/{id}/team and /opportunities/{id}/team: the whole virtual team."""

    class Meta:
        unknown = RAISE

    members = fields.List(fields.Nested(MemberSchema), required=True, validate=validate.Length(max=50))


class AccountSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String()
    industry = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    tier = fields.String(metadata={"enum": list(TIERS)})
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    team = fields.List(fields.Nested(MemberSchema))
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class AccountListArgsSchema(PageArgsSchema):
    type = fields.String(validate=validate.OneOf(ACCOUNT_TYPES))
    tier = fields.String(validate=validate.OneOf(TIERS))
    owner_id = Text(64)
    team_id = Text(64)
    region = Text(100)
    industry = Text(100)
    q = Text(200)
    sort = sort_field(ACCOUNT_SORTABLE)


# ---- contacts ---------------------------------------------------------------------------------------
class ContactWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1)
    title = Text(200, allow_none=True)
    email = fields.Email(allow_none=True, validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, validate=PHONE)
    is_primary = Flag()


class ContactCreateSchema(ContactWriteSchema):
    name = Text(200, min_length=1, required=True)


class ContactCreateAnywhereSchema(ContactCreateSchema):
    """POST /contacts names its account in the body."""

    account_id = fields.UUID(required=True)


class ContactSchema(Schema):
    id = fields.UUID()
    account_id = fields.UUID()
    name = fields.String()
    title = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    is_primary = Flag()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class ContactListArgsSchema(PageArgsSchema):
    account_id = fields.UUID()
    q = Text(200)


# ---- opportunities -----------------------------------------------------------------------------------
class ProductLineSchema(Schema):
    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=SKU)
    qty = WholeNumber(required=True, validate=validate.Range(min=1, max=10**7))
    unit_price = Money(required=True)


def _unique_skus(products: list[dict]) -> None:
    skus = [p["sku"] for p in products]
    if len(skus) != len(set(skus)):
        raise ValidationError("each product once; put the quantity in qty", "products")


class OpportunityWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1)
    amount = Money()
    currency = fields.String(validate=CURRENCY)
    expected_close_date = fields.Date(allow_none=True)
    region = Text(100, allow_none=True)
    products = fields.List(fields.Nested(ProductLineSchema), validate=validate.Length(max=100))

    @validates_schema
    def _products(self, data, **_):
        _unique_skus(data.get("products") or [])


class OpportunityCreateSchema(OpportunityWriteSchema):
    account_id = fields.UUID(required=True)
    name = Text(200, min_length=1, required=True)
    amount = Money(required=True)
    owner_id = Text(64, metadata={"description": "managers, executives and admins only: give it to someone"})


class ChecklistItemSchema(Schema):
    key = fields.String()
    label = fields.String()
    required = Flag()
    done = Flag()


class OpportunitySchema(Schema):
    id = fields.UUID()
    account_id = fields.UUID()
    name = fields.String()
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    stage = fields.String()
    probability = fields.Integer()
    amount = Money()
    currency = fields.String()
    expected_close_date = fields.Date(allow_none=True)
    region = fields.String(allow_none=True)
    products = fields.List(fields.Nested(ProductLineSchema))
    status = fields.String(metadata={"enum": list(STATUSES)})
    lost_reason = fields.String(allow_none=True)
    source_lead_id = fields.UUID(allow_none=True)
    team = fields.List(fields.Nested(MemberSchema))
    checklist = fields.List(fields.Nested(ChecklistItemSchema))
    collisions = fields.List(fields.UUID())
    expense_total = Money()
    stage_entered_at = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class OpportunityListArgsSchema(PageArgsSchema):
    stage = Text(40)
    status = fields.String(validate=validate.OneOf(STATUSES))
    owner_id = Text(64)
    team_id = Text(64)
    account_id = fields.UUID()
    region = Text(100)
    close_before = fields.Date(metadata={"description": "expected to close before this day"})
    close_after = fields.Date(metadata={"description": "expected to close on or after this day"})
    q = Text(200)
    sort = sort_field(OPPORTUNITY_SORTABLE)


class StageMoveSchema(Schema):
    class Meta:
        unknown = RAISE

    stage = Text(40, min_length=1, required=True)


class ChecklistTickSchema(Schema):
    class Meta:
        unknown = RAISE

    done = Flag(load_default=True)


class WinSchema(Schema):
    class Meta:
        unknown = RAISE

    amount = Money(metadata={"description": "the final amount, if it changed at signing"})


class LoseSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = Text(1000, min_length=1, required=True)


_ONLY_VISIBLE = "only when the other opportunity is visible to you"


class CollisionSchema(Schema):
    opportunity_id = fields.UUID(metadata={"description": "the other opportunity"})
    owner_id = fields.String(allow_none=True, metadata={"description": "who chases the other deal"})
    manager_id = fields.String(allow_none=True, metadata={"description": "whom to ask: the other owner's manager"})
    visible = Flag(metadata={"description": "whether you may open the other opportunity"})
    score = fields.Float(metadata={"description": _ONLY_VISIBLE})
    signals = fields.Dict(keys=fields.String(), values=fields.Float(), metadata={"description": _ONLY_VISIBLE})
    reasons = fields.List(fields.String(), metadata={"description": _ONLY_VISIBLE})
    account_name = fields.String(metadata={"description": _ONLY_VISIBLE})
    name = fields.String(metadata={"description": _ONLY_VISIBLE})
    detected_at = fields.AwareDateTime(metadata={"description": _ONLY_VISIBLE})


class CollisionDismissSchema(Schema):
    reason = Text(500)


class CollisionListSchema(Schema):
    items = fields.List(fields.Nested(CollisionSchema))


# ---- activities and expenses ------------------------------------------------------------------------
class ActivitySchema(ActivityFields):
    account_id = fields.UUID()
    opportunity_id = fields.UUID(allow_none=True)


class ExpenseCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    category = fields.String(required=True, validate=validate.OneOf(EXPENSE_CATEGORIES))
    amount = Money(required=True)
    incurred_on = Day(required=True)
    note = Text(2000, allow_none=True)


class ExpenseSchema(Schema):
    id = fields.UUID()
    opportunity_id = fields.UUID()
    category = fields.String()
    amount = Money()
    currency = fields.String()
    incurred_on = fields.Date()
    note = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = fields.AwareDateTime()


# ---- pipeline stages ---------------------------------------------------------------------------------
class StageChecklistItemSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9_]{1,40}$"))
    label = Text(200, min_length=1, required=True)
    required = Flag(load_default=False)


class StageSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9_]{1,40}$"))
    label = Text(200, min_length=1, required=True)
    probability = WholeNumber(required=True, validate=validate.Range(min=0, max=100))
    checklist = fields.List(fields.Nested(StageChecklistItemSchema), load_default=list,
                            validate=validate.Length(max=50))


class StagesSchema(Schema):
    class Meta:
        unknown = RAISE

    stages = fields.List(fields.Nested(StageSchema), required=True, validate=validate.Length(min=1, max=30))
    version = fields.Integer(dump_only=True)


# ---- what other services send --------------------------------------------------------------------------
class _Part(Schema):
    class Meta:
        unknown = EXCLUDE


class ConvertedAccountSchema(_Part):
    id = fields.UUID(required=True)
    existing = Flag(load_default=False)
    name = Text(200, min_length=1, required=True)
    type = fields.String(load_default="b2b", validate=validate.OneOf(ACCOUNT_TYPES))
    industry = Text(100, allow_none=True)
    region = Text(100, allow_none=True)


class ConvertedContactSchema(_Part):
    id = fields.UUID(required=True)
    name = Text(200, min_length=1, required=True)
    email = Text(320, allow_none=True)
    phone = Text(50, allow_none=True)
    is_primary = Flag(load_default=True)


class ConvertedOpportunitySchema(_Part):
    id = fields.UUID(required=True)
    name = Text(200, min_length=1, required=True)
    amount = Money(required=True)
    currency = fields.String(required=True, validate=CURRENCY)
    expected_close_date = fields.Date(allow_none=True)
    region = Text(100, allow_none=True)
    source_lead_id = fields.UUID(allow_none=True)
    products = fields.List(fields.Nested(ProductLineSchema), load_default=list)


class LeadConvertedSchema(_Part):
    """`data` of lead.converted (crm.leads.v1), as the leads service publishes it."""

    owner_id = Text(64, allow_none=True)
    team_id = Text(64, allow_none=True)
    account = fields.Nested(ConvertedAccountSchema, required=True)
    contact = fields.Nested(ConvertedContactSchema, required=True)
    opportunity = fields.Nested(ConvertedOpportunitySchema, required=True)


class OrderRevenueSchema(_Part):
    """What tiering needs of order.confirmed / order.paid (crm.orders.v1)."""

    id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    account_id = fields.UUID(required=True)
    total = Money(required=True, strings_only=False)  # another service's event: a number is taken too
    currency = fields.String(load_default=None, allow_none=True)
    counts_toward_quota = fields.Boolean(load_default=True)


account_schema = AccountSchema()
contact_schema = ContactSchema()
opportunity_schema = OpportunitySchema()
AccountPageSchema = page_schema(AccountSchema, "AccountPageSchema")
ContactPageSchema = page_schema(ContactSchema, "ContactPageSchema")
OpportunityPageSchema = page_schema(OpportunitySchema, "OpportunityPageSchema")
ActivityPageSchema = page_schema(ActivitySchema, "ActivityPageSchema")
ExpensePageSchema = page_schema(ExpenseSchema, "ExpensePageSchema")
