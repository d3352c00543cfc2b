"""marshmallow schemas: what the orders API accepts and returns. Server-kept fields (id, version,
times) are not in the create/patch schemas, and unknown fields are refused (no mass assignment);
a SKU is given once, at creation."""
from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal

from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate

from crmkit.fields import CURRENCY, Day, Flag, Money, QueryFlag, Text, WholeNumber, viewer_role
from crmkit.pagination import PageArgsSchema, page_schema, sort_field

from .domain import CENT, COST_HIDDEN_FROM, MAX_LINES, MAX_QTY, STATUSES, margin_pct

SKU = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$", error="letters, digits, . _ - (up to 64)")



# ---- products ---------------------------------------------------------------------------------------
class ProductWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1)
    category = Text(100, allow_none=True, metadata={"description": "the product line"})
    list_price = Money()
    unit_cost = Money(allow_none=True)
    currency = fields.String(validate=CURRENCY)
    active = Flag()
    excluded_from_quota = Flag(metadata={"description": "its sales do not count toward quota"})


class ProductCreateSchema(ProductWriteSchema):
    sku = fields.String(required=True, validate=SKU)
    name = Text(200, min_length=1, required=True)
    list_price = Money(required=True)


class ProductImportRowSchema(ProductCreateSchema):
    """A catalogue CSV row: what a create takes (flags already read from the cell's words)."""


class ImportResultSchema(Schema):
    created = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()


class ProductSchema(Schema):
    id = fields.UUID()
    sku = fields.String()
    name = fields.String()
    category = fields.String(allow_none=True)
    list_price = Money()
    unit_cost = Money(allow_none=True, hidden_from=COST_HIDDEN_FROM,
                      metadata={"description": "left out for reps, service and marketing"})
    margin_pct = fields.Method("_margin", metadata={
        "type": ["string", "null"], "format": "decimal",
        "description": "(list price - unit cost) / list price, in percent; left out where unit_cost is"})
    currency = fields.String()
    active = fields.Boolean()
    excluded_from_quota = fields.Boolean()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()

    def _margin(self, product):
        if viewer_role() in COST_HIDDEN_FROM:
            return missing  # left out of the body, as unit_cost is
        margin = margin_pct(product.list_price, product.unit_cost)
        return None if margin is None else str(margin)


class ProductListArgsSchema(PageArgsSchema):
    q = Text(200, metadata={"description": "in SKU or name"})
    category = Text(100)
    active = QueryFlag()


ProductPageSchema = page_schema(ProductSchema, "ProductPageSchema")


# ---- orders -----------------------------------------------------------------------------------------
_PERCENT_TEXT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?")


class Percent(fields.Decimal):
    """A percentage from 0 to 100: a string with at most two decimals ("12.5"), or a JSON number,
    rounded to two decimals (half up) as an invoice would."""

    def __init__(self, **kwargs):
        super().__init__(as_string=True, places=2, metadata={
            "type": ["string", "number"], "format": "decimal", "minimum": 0, "maximum": 100,
            "pattern": r"^[0-9]{1,3}(\.[0-9]{1,2})?$", "example": "12.5", **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValidationError("a percentage such as 12.5")
        if isinstance(value, str) and not _PERCENT_TEXT.fullmatch(value):
            raise ValidationError("a percentage from 0 to 100, at most 2 decimals")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("a percentage from 0 to 100")
        number = Decimal(value if isinstance(value, str) else repr(value))
        if not 0 <= number <= 100:
            raise ValidationError("from 0 to 100")
        return number.quantize(Decimal("0.01"), ROUND_HALF_UP)


class OrderLineInSchema(Schema):
    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=SKU)
    qty = WholeNumber(required=True, validate=validate.Range(min=1, max=MAX_QTY))
    unit_price = Money(metadata={"description": "the catalogue's list price when left out"})
    discount_pct = Percent(load_default=None)


_LINES = {"validate": validate.Length(max=MAX_LINES), "metadata": {"description": "replaced whole on PATCH",
                                                                    "maxItems": MAX_LINES}}


class OrderWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    type = Text(40, metadata={"description": "a key of GET /order-types (standard by default)"})
    lines = fields.List(fields.Nested(OrderLineInSchema), **_LINES)
    currency = fields.String(validate=CURRENCY)
    delivery_date = Day(allow_none=True)
    payment_terms_days = WholeNumber(validate=validate.Range(min=0, max=365))
    notes = Text(5000, allow_none=True)


class OrderCreateSchema(OrderWriteSchema):
    account_id = fields.UUID(required=True)


class OrderLineSchema(Schema):
    sku = fields.String()
    name = fields.String()
    category = fields.String(allow_none=True)
    qty = fields.Integer()
    list_price = Money()
    unit_price = Money()
    discount_pct = fields.Decimal(as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    line_total = Money()
    unit_cost = Money(allow_none=True, hidden_from=COST_HIDDEN_FROM)
    excluded_from_quota = fields.Boolean()


def _money_text(value) -> str | None:
    return None if value is None else str(value.quantize(CENT))


class OrderLines(fields.List):
    """An order's lines, documented as a list of OrderLineSchema, written without a schema per line:
    a page of 50 orders has hundreds of lines, and marshmallow's per-field machinery was most of a
    list page's time. tests/unit/test_orders_domain.py checks it writes what OrderLineSchema would."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(OrderLineSchema), **kwargs)

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        hide_cost = viewer_role() in COST_HIDDEN_FROM
        out = []
        for line in value:
            row = {"sku": line.sku, "name": line.name, "category": line.category, "qty": line.qty,
                   "list_price": _money_text(line.list_price), "unit_price": _money_text(line.unit_price),
                   "discount_pct": _money_text(line.discount_pct), "line_total": _money_text(line.line_total),
                   "excluded_from_quota": line.excluded_from_quota}
            if not hide_cost:
                row["unit_cost"] = _money_text(line.unit_cost)
            out.append(row)
        return out


class InstalmentSchema(Schema):
    class Meta:
        unknown = RAISE

    due_on = Day(required=True)
    amount = Money(required=True)


class InstalmentStateSchema(InstalmentSchema):
    paid = Money()
    outstanding = Money()
    overdue = fields.Boolean()


class OrderSchema(Schema):
    id = fields.UUID()
    number = fields.String(metadata={"example": "SO-2026-000123"})
    account_id = fields.UUID()
    opportunity_id = fields.UUID(allow_none=True)
    duplicated_from = fields.UUID(allow_none=True)
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    credited_to = fields.String(allow_none=True, metadata={"description": "whose performance it counts for"})
    type = fields.String()
    counts_toward_quota = fields.Boolean()
    quota_reason = fields.String()
    counted_total = Money(metadata={"description": "the part of the total that counts toward quota"})
    lines = OrderLines()
    total = Money()
    gross_margin = Money(allow_none=True, hidden_from=COST_HIDDEN_FROM,
                         metadata={"description": "total - cost; null when a cost is unknown; left out for reps, "
                                                  "service and marketing"})
    collected = Money()
    outstanding = Money()
    payment_plan = fields.List(fields.Nested(InstalmentStateSchema))
    currency = fields.String()
    delivery_date = fields.Date(allow_none=True)
    payment_terms_days = fields.Integer()
    status = fields.String(metadata={"enum": list(STATUSES)})
    rejection_reason = fields.String(allow_none=True)
    notes = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class OrderListArgsSchema(PageArgsSchema):
    account_id = fields.UUID()
    opportunity_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(STATUSES))
    owner_id = Text(64)
    team_id = Text(64)
    type = Text(40)
    counts_toward_quota = QueryFlag()
    q = Text(40, metadata={"description": "in the order number"})
    sort = sort_field({"created_at", "updated_at", "total"})


class PaySchema(Schema):
    class Meta:
        unknown = RAISE

    amount = Money(required=True)
    paid_on = Day(required=True)
    reference = Text(200, allow_none=True)


class PaymentSchema(Schema):
    id = fields.UUID()
    amount = Money()
    paid_on = fields.Date()
    reference = fields.String(allow_none=True)
    recorded_by = fields.String()
    recorded_at = fields.AwareDateTime()


class PaymentPlanSchema(Schema):
    class Meta:
        unknown = RAISE

    instalments = fields.List(fields.Nested(InstalmentSchema), required=True, validate=validate.Length(max=120))


class CancelSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = Text(2000, allow_none=True)


class HistoryEntrySchema(Schema):
    at = fields.AwareDateTime()
    actor = fields.String(allow_none=True)
    action = fields.String()
    detail = fields.Dict()


class HistorySchema(Schema):
    items = fields.List(fields.Nested(HistoryEntrySchema))


class PaymentListSchema(Schema):
    items = fields.List(fields.Nested(PaymentSchema))


OrderPageSchema = page_schema(OrderSchema, "OrderPageSchema")


# ---- order types and house accounts -------------------------------------------------------------------
class OrderTypeSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,39}$",
                                                                error="lower-case letters, digits, _ (up to 40)"))
    label = Text(100, min_length=1, required=True)
    counts_toward_quota = Flag(required=True)


class OrderTypesSchema(Schema):
    class Meta:
        unknown = RAISE

    types = fields.List(fields.Nested(OrderTypeSchema), required=True, validate=validate.Length(min=1, max=50))


class HouseAccountSchema(Schema):
    class Meta:
        unknown = RAISE

    house_account = Flag(required=True)


class HouseAccountStateSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    house_account = fields.Boolean()


class HouseAccountListSchema(Schema):
    items = fields.List(fields.Nested(HouseAccountStateSchema))
