"""What the orders service publishes and consumes on Kafka (CONTRACT §5): the topics, and one payload
schema per event type and version (crmkit.eventschema), apart from the API's schemas."""
from __future__ import annotations

from marshmallow import fields, validate

from crmkit.directory_events import HANDOVER_COMPLETED, HandoverCompletedV1
from crmkit.eventschema import Catalog, Money, Payload
from crmkit.settings import Settings

from . import SERVICE
from .domain import COST_HIDDEN_FROM

ORDERS_TOPIC = "crm.orders.v1"
DIRECTORY_TOPIC = "crm.directory.v1"    # the replica of users and teams, and handover requests
OPPORTUNITIES_TOPIC = "crm.opportunities.v1"  # account.* keep the replica of accounts

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {ORDERS_TOPIC: 6, DIRECTORY_TOPIC: 3, OPPORTUNITIES_TOPIC: 6}

Time = fields.AwareDateTime  # ISO 8601 with its offset (UTC)
HIDDEN_COST = {"x-hidden-from": list(COST_HIDDEN_FROM)}


# ---- payloads -------------------------------------------------------------------------------------------
class ProductV1(Payload):
    id = fields.UUID(required=True)
    sku = fields.String(required=True)
    name = fields.String(required=True)
    category = fields.String(required=True, allow_none=True)
    list_price = Money(required=True)
    unit_cost = Money(required=True, allow_none=True, metadata=HIDDEN_COST)
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    active = fields.Boolean(required=True)
    excluded_from_quota = fields.Boolean(required=True)
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class ProductEventV1(Payload):
    product = fields.Nested(ProductV1, required=True)
    changed = fields.List(fields.String(), metadata={"description": "on product.updated: the fields that changed"})


# ---- what the orders service publishes on crm.orders.v1 ------------------------------------------------
ORDERS = Catalog(SERVICE, ORDERS_TOPIC, "The product catalogue, orders, approvals, payments and performance.",
                 partitions=TOPIC_PARTITIONS[ORDERS_TOPIC])
PRODUCT = "product id"
PRODUCT_CREATED = ORDERS.define("product.created", ProductEventV1, subject=PRODUCT,
                                summary="A product was added to the catalogue.")
PRODUCT_UPDATED = ORDERS.define("product.updated", ProductEventV1, subject=PRODUCT,
                                summary="A product changed (price, cost, category, active, excluded from quota).")
ORDERS.define(HANDOVER_COMPLETED, HandoverCompletedV1, subject="handover id",
              summary="The leaver's open orders moved to the successor (or it failed).")


def event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return ORDERS.event(settings, event_type, subject, data, actor=actor)
