"""marshmallow schemas: what the orders API accepts and returns. Server-kept fields (id, version,
times) are not in the create/patch schemas, and unknown fields are refused (no mass assignment);
a SKU is given once, at creation."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, missing, validate

from crmkit.fields import CURRENCY, Flag, Money, QueryFlag, Text, viewer_role
from crmkit.pagination import PageArgsSchema

from .domain import COST_HIDDEN_FROM, margin_pct

SKU = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$", error="letters, digits, . _ - (up to 64)")


def _page(item_schema, name: str) -> type[Schema]:
    return type(name, (Schema,), {"items": fields.List(fields.Nested(item_schema)),
                                  "next_cursor": fields.String(allow_none=True)})


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


ProductPageSchema = _page(ProductSchema, "ProductPageSchema")
