"""Orders HTTP API: orders and their lines, the life of an order (submit, fulfil, pay, cancel), its
payments, plan and history; order types and house accounts. Thin routes: parse, call one use case,
commit, render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, IF_MATCH_OPTIONAL, check_if_match_if_given, require_if_match, tagged
from crmkit.idempotency import idempotent
from crmkit.web import Blueprint, ctx, principal, roles

from . import lifecycle, order_types, orders
from .schemas import (
    CancelSchema,
    HistorySchema,
    HouseAccountListSchema,
    HouseAccountSchema,
    HouseAccountStateSchema,
    OrderCreateSchema,
    OrderListArgsSchema,
    OrderPageSchema,
    OrderSchema,
    OrderTypesSchema,
    OrderWriteSchema,
    PaymentListSchema,
    PaymentPlanSchema,
    PaySchema,
)

READERS = ("rep", "manager", "executive", "service", "admin")
SELLERS = ("rep", "manager", "executive", "admin")
LEADERS = ("manager", "executive", "admin")
orders_blp = Blueprint("orders", __name__, description="Orders, their lines, life, payments and history")
quota_blp = Blueprint("quota", __name__, description="What counts toward quota: order types and house accounts")



def _changed(action):
    """Run a change to one order in a unit of work; answer it rendered, with its new ETag."""
    with ctx().db.uow() as uow:
        order = action(uow)
        uow.commit()
        orders.render(uow, [order])
    return order, 200, tagged(order)


@orders_blp.route("/orders", methods=["POST"])
@orders_blp.arguments(OrderCreateSchema)
@idempotent
@orders_blp.response(201, OrderSchema)
@roles(*SELLERS)
def create_order(fields):
    """Create a draft order on an account you can see; lines are priced from the catalogue.

    Refused (422) when the account is not one you can see ("no such account"), a SKU is unknown or
    no longer sold, the products are priced in different currencies, the type is not one of
    GET /order-types, or a line or the total is beyond what an order can hold (under 10^12).
    """
    with ctx().db.uow() as uow:
        order = orders.create_order(uow, ctx().settings, principal(), fields)
        uow.commit()
        orders.render(uow, [order])
    return order, 201, {**tagged(order), "Location": f"/api/v1/orders/{order.id}"}


@orders_blp.route("/orders", methods=["GET"])
@orders_blp.arguments(OrderListArgsSchema, location="query", unknown=RAISE)
@orders_blp.response(200, OrderPageSchema)
@roles(*READERS)
def list_orders(args):
    """List the orders you may see, newest first; filter by account, status, owner, team, type."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = orders.list_orders(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@orders_blp.route("/orders/<uuid:order_id>", methods=["GET"])
@orders_blp.response(200, OrderSchema)
@roles(*READERS)
def get_order(order_id: uuid.UUID):
    """Read one order with its lines, totals and payment plan."""
    with ctx().db.uow(readonly=True) as uow:
        order = orders.get_order(uow, principal(), order_id)
    return order, 200, tagged(order)


@orders_blp.route("/orders/<uuid:order_id>", methods=["PATCH"])
@orders_blp.arguments(OrderWriteSchema)
@orders_blp.response(200, OrderSchema)
@orders_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_order(changes, order_id: uuid.UUID):
    """Change an order's lines or terms; on an order under approval or approved, approval re-opens.

    Needs If-Match with the ETag you last read. Lines are refused as on create (422); a paid,
    fulfilled or cancelled order cannot change (409).
    """
    return _changed(lambda uow: orders.update_order(uow, ctx().settings, principal(), order_id, changes,
                                                    require_if_match))


@orders_blp.route("/orders/<uuid:order_id>", methods=["DELETE"])
@orders_blp.response(204)
@orders_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def delete_order(order_id: uuid.UUID):
    """Discard a draft (it is kept, cancelled, so its number is not reused)."""
    with ctx().db.uow() as uow:
        lifecycle.cancel(uow, ctx().settings, principal(), order_id, "draft discarded", check_if_match_if_given,
                         drafts_only=True)
        uow.commit()


@orders_blp.route("/orders/<uuid:order_id>/submit", methods=["POST"])
@orders_blp.response(200, OrderSchema)
@orders_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def submit(order_id: uuid.UUID):
    """Submit a draft: confirmed at once, or pending approval when the policy's rules require it."""
    return _changed(lambda uow: lifecycle.submit(uow, ctx().settings, principal(), order_id,
                                                 check_if_match_if_given))


@orders_blp.route("/orders/<uuid:order_id>/fulfill", methods=["POST"])
@orders_blp.response(200, OrderSchema)
@orders_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def fulfill(order_id: uuid.UUID):
    """Mark a confirmed order delivered (paid too, if it is paid in full)."""
    return _changed(lambda uow: lifecycle.fulfill(uow, ctx().settings, principal(), order_id,
                                                  check_if_match_if_given))


@orders_blp.route("/orders/<uuid:order_id>/pay", methods=["POST"])
@orders_blp.arguments(PaySchema)
@idempotent
@orders_blp.response(200, OrderSchema)
@roles(*SELLERS)
def pay(body, order_id: uuid.UUID):
    """Record money collected on an order (partial payments add up); send an Idempotency-Key.

    Refused (422) for more than is outstanding, zero, or a date in the future; 409 unless the order
    is confirmed or fulfilled.
    """
    return _changed(lambda uow: lifecycle.pay(uow, ctx().settings, principal(), order_id, body))


@orders_blp.route("/orders/<uuid:order_id>/cancel", methods=["POST"])
@orders_blp.arguments(CancelSchema)
@orders_blp.response(200, OrderSchema)
@orders_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def cancel(body, order_id: uuid.UUID):
    """Cancel an order not yet delivered and with nothing collected on it."""
    return _changed(lambda uow: lifecycle.cancel(uow, ctx().settings, principal(), order_id, body.get("reason"),
                                                 check_if_match_if_given))


@orders_blp.route("/orders/<uuid:order_id>/duplicate", methods=["POST"])
@idempotent
@orders_blp.response(201, OrderSchema)
@roles(*SELLERS)
def duplicate(order_id: uuid.UUID):
    """Copy an order as a new draft of yours; it needs its own approval."""
    with ctx().db.uow() as uow:
        order = orders.duplicate_order(uow, ctx().settings, principal(), order_id)
        uow.commit()
        orders.render(uow, [order])
    return order, 201, {**tagged(order), "Location": f"/api/v1/orders/{order.id}"}


@orders_blp.route("/orders/<uuid:order_id>/payment-plan", methods=["PUT"])
@orders_blp.arguments(PaymentPlanSchema)
@orders_blp.response(200, OrderSchema)
@roles(*SELLERS)
def put_payment_plan(body, order_id: uuid.UUID):
    """Set the instalments (due dates and amounts adding up to the total); an empty list removes the plan.

    Refused (422) when the instalments do not add up to the order's total or two share a due date.
    """
    return _changed(lambda uow: lifecycle.set_payment_plan(uow, ctx().settings, principal(), order_id,
                                                           body["instalments"]))


@orders_blp.route("/orders/<uuid:order_id>/payments", methods=["GET"])
@orders_blp.response(200, PaymentListSchema)
@roles(*READERS)
def list_payments(order_id: uuid.UUID):
    """The payments recorded on an order, by date."""
    with ctx().db.uow(readonly=True) as uow:
        return {"items": lifecycle.payments(uow, principal(), order_id)}


@orders_blp.route("/orders/<uuid:order_id>/history", methods=["GET"])
@orders_blp.response(200, HistorySchema)
@roles(*READERS)
def order_history(order_id: uuid.UUID):
    """What happened to an order: submissions, every approval decision, payments; who and when."""
    with ctx().db.uow(readonly=True) as uow:
        return {"items": orders.history(uow, principal(), order_id)}


# ---- order types and house accounts -----------------------------------------------------------------
@quota_blp.route("/order-types", methods=["GET"])
@quota_blp.response(200, OrderTypesSchema)
@roles(*READERS)
def get_order_types():
    """The kinds of order and whether each counts toward quota."""
    with ctx().db.uow(readonly=True) as uow:
        return {"types": order_types.order_types(uow)}


@quota_blp.route("/order-types", methods=["PUT"])
@quota_blp.arguments(OrderTypesSchema)
@quota_blp.response(200, OrderTypesSchema)
@roles("admin")
def put_order_types(body):
    """Replace the order types (admin); orders not yet confirmed follow a change of what counts.

    Keys are unique and `standard` stays (422); a type still named by an order cannot go (409).
    """
    with ctx().db.uow() as uow:
        types = order_types.put_order_types(uow, ctx().settings, principal(), body["types"])
        uow.commit()
        return {"types": types}


@quota_blp.route("/house-accounts", methods=["GET"])
@quota_blp.response(200, HouseAccountListSchema)
@roles(*LEADERS)
def list_house_accounts():
    """The house accounts you may see: their orders count toward no rep's quota."""
    with ctx().db.uow(readonly=True) as uow:
        return {"items": order_types.house_accounts(uow, principal())}


@quota_blp.route("/house-accounts/<uuid:account_id>", methods=["PUT"])
@quota_blp.arguments(HouseAccountSchema)
@quota_blp.response(200, HouseAccountStateSchema)
@roles("admin")
def put_house_account(body, account_id: uuid.UUID):
    """Mark an account a house account, or not (admin)."""
    with ctx().db.uow() as uow:
        account = order_types.set_house_account(uow, ctx().settings, principal(), account_id, body["house_account"])
        uow.commit()
        return account
