"""What the orders service publishes and consumes on Kafka (CONTRACT §5): the topics, and one payload
schema per event type and version (crmkit.eventschema), apart from the API's schemas."""
from __future__ import annotations

from marshmallow import fields, validate

from crmkit.directory_events import HANDOVER_COMPLETED, HandoverCompletedV1
from crmkit.eventschema import Catalog, Money, Payload
from crmkit.settings import Settings

from . import SERVICE
from .domain import COST_HIDDEN_FROM, LEVELS, STATUSES

ORDERS_TOPIC = "crm.orders.v1"
DIRECTORY_TOPIC = "crm.directory.v1"    # the replica of users and teams, and handover requests
OPPORTUNITIES_TOPIC = "crm.opportunities.v1"  # account.* keep the replica of accounts; won deals; activities
LEADS_TOPIC = "crm.leads.v1"  # activities logged on leads count toward performance

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {ORDERS_TOPIC: 6, DIRECTORY_TOPIC: 3, OPPORTUNITIES_TOPIC: 6, LEADS_TOPIC: 6}

Time = fields.AwareDateTime  # ISO 8601 with its offset (UTC)
HIDDEN_COST = {"x-hidden-from": list(COST_HIDDEN_FROM)}
# Order money (prices, totals, payments) is not for marketing (CONTRACT §2: no orders or money fields).
HIDDEN_MONEY = {"x-hidden-from": ["marketing"]}


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


class OrderLineV1(Payload):
    sku = fields.String(required=True)
    name = fields.String(required=True)
    category = fields.String(required=True, allow_none=True)
    qty = fields.Integer(required=True)
    list_price = Money(required=True, metadata=HIDDEN_MONEY)
    unit_price = Money(required=True, metadata=HIDDEN_MONEY)
    discount_pct = fields.Decimal(required=True, as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    line_total = Money(required=True, metadata=HIDDEN_MONEY)
    unit_cost = Money(required=True, allow_none=True, metadata=HIDDEN_COST)
    excluded_from_quota = fields.Boolean(required=True)


class OrderV1(Payload):
    id = fields.UUID(required=True)
    number = fields.String(required=True)
    account_id = fields.UUID(required=True)
    opportunity_id = fields.UUID(required=True, allow_none=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    credited_to = fields.String(required=True, allow_none=True,
                                metadata={"description": "whose performance it counts for (set when confirmed)"})
    type = fields.String(required=True)
    counts_toward_quota = fields.Boolean(required=True)
    quota_reason = fields.String(required=True)
    lines = fields.List(fields.Nested(OrderLineV1), required=True)
    total = Money(required=True, metadata=HIDDEN_MONEY)
    gross_margin = Money(required=True, allow_none=True, metadata=HIDDEN_COST)
    collected = Money(required=True, metadata=HIDDEN_MONEY)
    outstanding = Money(required=True, metadata=HIDDEN_MONEY)
    currency = fields.String(required=True)
    delivery_date = fields.Date(required=True, allow_none=True)
    payment_terms_days = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    created_at = Time(required=True)
    updated_at = Time(required=True)
    version = fields.Integer(required=True)


class PaymentV1(Payload):
    id = fields.UUID(required=True)
    amount = Money(required=True, metadata=HIDDEN_MONEY)
    paid_on = fields.Date(required=True)


class OrderEventV1(Payload):
    order = fields.Nested(OrderV1, required=True)
    changed = fields.List(fields.String(), metadata={"description": "on order.updated: the fields that changed"})
    previous_owner_id = fields.String(allow_none=True, metadata={"description": "on a handover"})
    reason = fields.String(allow_none=True, metadata={"description": "why (a cancellation, a handover, a rejection)"})
    payment = fields.Nested(PaymentV1, metadata={"description": "on order.payment_recorded"})


class ApprovalReasonV1(Payload):
    rule = fields.String(required=True)
    metric = fields.String(required=True)
    op = fields.String(required=True)
    threshold = fields.String(required=True, metadata=HIDDEN_COST)
    value = fields.String(required=True, allow_none=True, metadata=HIDDEN_COST)
    chain = fields.List(fields.String(), required=True)


class ApprovalStepV1(Payload):
    position = fields.Integer(required=True)
    level = fields.String(required=True, validate=validate.OneOf(LEVELS))
    approver_id = fields.String(required=True, allow_none=True,
                                metadata={"description": "null: any executive may decide"})
    status = fields.String(required=True)
    decided_by = fields.String(required=True, allow_none=True)
    decided_at = Time(required=True, allow_none=True)
    comment = fields.String(required=True, allow_none=True)


class ApprovalV1(Payload):
    id = fields.UUID(required=True)
    order_id = fields.UUID(required=True)
    order_number = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)
    reasons = fields.List(fields.Nested(ApprovalReasonV1), required=True)
    steps = fields.List(fields.Nested(ApprovalStepV1), required=True)
    current_approver_id = fields.String(required=True, allow_none=True,
                                        metadata={"description": "who must act now (null: any executive)"})
    current_level = fields.String(required=True, allow_none=True)
    requested_by = fields.String(required=True)
    created_at = Time(required=True)
    closed_at = Time(required=True, allow_none=True)


class ApprovalEventV1(Payload):
    approval = fields.Nested(ApprovalV1, required=True)
    decision = fields.String(validate=validate.OneOf(["approve", "reject"]), metadata={"description": "on approval.decided"})
    decided_by = fields.String(metadata={"description": "on approval.decided"})
    comment = fields.String(allow_none=True, metadata={"description": "on approval.decided"})
    escalated_from = fields.String(allow_none=True, metadata={"description": "on approval.escalated: who did not act"})


class AlertV1(Payload):
    id = fields.UUID(required=True, metadata={"description": "the firing's id: one per rule, subject and period"})
    rule = fields.String(required=True, metadata={"description": "the alert rule's name"})
    kind = fields.String(required=True, validate=validate.OneOf(["target_reached", "pace"]))
    subject_type = fields.String(required=True, validate=validate.OneOf(["user", "team"]))
    subject_id = fields.String(required=True)
    metric = fields.String(required=True)
    period = fields.String(required=True, metadata={"description": "2026-11, 2026-Q4 or 2026"})
    day_of_period = fields.Integer(required=True, metadata={"description": "1 on the period's first day"})
    fired_on = fields.Date(required=True, metadata={"description": "the day checked, in the deployment's time zone"})
    target = Money(required=True, metadata=HIDDEN_MONEY)
    actual = Money(required=True, metadata=HIDDEN_MONEY)
    attainment = fields.Decimal(required=True, as_string=True, places=1,
                                metadata={"type": "string", "format": "decimal", "description": "percent"})
    threshold_pct = fields.String(allow_none=True, metadata={"description": "target_reached: the threshold"})
    below_pct = fields.String(allow_none=True, metadata={"description": "pace: the pace required"})
    rep_id = fields.String(required=True, allow_none=True, metadata={"description": "the rep (a user subject)"})
    manager_id = fields.String(required=True, allow_none=True, metadata={"description": "the rep's or team's manager"})
    executive_ids = fields.List(fields.String(), required=True, metadata={"description": "the executives to tell"})


class AlertEventV1(Payload):
    alert = fields.Nested(AlertV1, required=True)


def _Figure(**kwargs):  # noqa: N802 - a field factory
    """A target or figure: up to the 14 digits the targets table holds (Money's 12 are an order's)."""
    return fields.Decimal(as_string=True, places=2, metadata={
        **HIDDEN_MONEY, "type": "string", "format": "decimal", "pattern": r"^-?[0-9]{1,14}\.[0-9]{2}$"}, **kwargs)


class TeamActualV1(Payload):
    team_id = fields.String(required=True, allow_none=True)
    actual = _Figure(required=True)


class AttainmentV1(Payload):
    subject_type = fields.String(required=True, validate=validate.OneOf(["user", "team"]))
    subject_id = fields.String(required=True)
    metric = fields.String(required=True)
    period = fields.String(required=True, metadata={"description": "2026-11, 2026-Q4 or 2026"})
    day = fields.Date(required=True, metadata={"description": "the day it stood at, at its end (deployment's zone)"})
    target = _Figure(required=True)
    actual = _Figure(required=True)
    attainment = fields.Decimal(required=True, as_string=True, places=1,
                                metadata={"type": "string", "format": "decimal", "description": "percent"})
    by_team = fields.List(fields.Nested(TeamActualV1), metadata={
        "description": "a person's: the actual split by the team the credit was earned in (a manager is shown "
                       "their teams' part)"})


class AttainmentEventV1(Payload):
    attainment = fields.Nested(AttainmentV1, required=True)


class OrdersHandoverCompletedV1(HandoverCompletedV1):
    orders = fields.Integer(metadata={"description": "open orders moved (credit already given stays)"})
    approvals = fields.Integer(metadata={"description": "approvals that waited for the leaver's decision"})


# ---- what the orders service publishes on crm.orders.v1 ------------------------------------------------
ORDERS = Catalog(SERVICE, ORDERS_TOPIC, "The product catalogue, orders, approvals, payments and performance.",
                 partitions=TOPIC_PARTITIONS[ORDERS_TOPIC])
PRODUCT = "product id"
PRODUCT_CREATED = ORDERS.define("product.created", ProductEventV1, subject=PRODUCT,
                                summary="A product was added to the catalogue.")
PRODUCT_UPDATED = ORDERS.define("product.updated", ProductEventV1, subject=PRODUCT,
                                summary="A product changed (price, cost, category, active, excluded from quota).")
ORDER = "order id"
APPROVAL = "order id (an order's approvals stay in order with the order's events)"
ORDER_CREATED = ORDERS.define("order.created", OrderEventV1, subject=ORDER,
                              summary="An order was created (by hand, by duplication, or from a won deal).")
ORDER_UPDATED = ORDERS.define("order.updated", OrderEventV1, subject=ORDER,
                              summary="An order's lines or terms changed, or it was given to someone else.")
ORDER_SUBMITTED = ORDERS.define("order.submitted", OrderEventV1, subject=ORDER,
                                summary="An order was submitted: it is confirmed next, or waits for approval.")
ORDER_CONFIRMED = ORDERS.define("order.confirmed", OrderEventV1, subject=ORDER,
                                summary="An order was confirmed (no approval needed, or every approver approved).")
ORDER_FULFILLED = ORDERS.define("order.fulfilled", OrderEventV1, subject=ORDER, summary="An order was delivered.")
ORDER_PAYMENT_RECORDED = ORDERS.define("order.payment_recorded", OrderEventV1, subject=ORDER,
                                       summary="Money was collected on an order (partial payments included).")
ORDER_PAID = ORDERS.define("order.paid", OrderEventV1, subject=ORDER,
                           summary="An order was fulfilled and paid in full.")
ORDER_CANCELLED = ORDERS.define("order.cancelled", OrderEventV1, subject=ORDER, summary="An order was cancelled.")
APPROVAL_REQUESTED = ORDERS.define("approval.requested", ApprovalEventV1, subject=APPROVAL,
                                   summary="An order needs approval; current_approver_id must act.")
APPROVAL_DECIDED = ORDERS.define("approval.decided", ApprovalEventV1, subject=APPROVAL,
                                 summary="An approver approved or rejected; the next approver, if any, must act.")
APPROVAL_ESCALATED = ORDERS.define("approval.escalated", ApprovalEventV1, subject=APPROVAL,
                                   summary="An approval waited too long and went to the next approver up.")
SUBJECT = "subject: user:<id> or team:<id>"
PERFORMANCE_TARGET_REACHED = ORDERS.define(
    "performance.target_reached", AlertEventV1, subject=SUBJECT,
    summary="A subject's attainment of a metric reached an alert rule's threshold (once per rule, subject and period).")
PERFORMANCE_PACE_WARNING = ORDERS.define(
    "performance.pace_warning", AlertEventV1, subject=SUBJECT,
    summary="On the rule's day of the period a subject's attainment was below the pace required "
            "(once per rule, subject and period).")
PERFORMANCE_ATTAINMENT = ORDERS.define(
    "performance.attainment", AttainmentEventV1, subject=SUBJECT,
    summary="Once a day, for the day just ended: a subject's attainment of each target it has for the month, "
            "quarter and year containing that day (weekly progress reads it).")
ORDERS.define(HANDOVER_COMPLETED, OrdersHandoverCompletedV1, subject="handover id",
              summary="The leaver's open orders moved to the successor (or it failed).")


def event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return ORDERS.event(settings, event_type, subject, data, actor=actor)
