"""An order's life after it is written: submit (confirmed at once, or an approval request), the
outcome of approval, fulfilment, payments against an optional plan, cancellation. Each use case
leaves the commit to its caller."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import delete, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, ValidationFailed
from crmkit.settings import Settings

from . import approvals, domain
from .db import Approval, Instalment, Order, Payment
from .events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_FULFILLED,
    ORDER_PAID,
    ORDER_PAYMENT_RECORDED,
    ORDER_SUBMITTED,
    ORDER_UPDATED,
)
from .orders import order_event, record, render, terms_of, writable_order


def _move(order: Order, to: str) -> None:
    if not domain.may_move(order.status, to):
        raise Conflict(f"a {order.status} order cannot become {to}")
    order.status, order.updated_at = to, utcnow()


def _evaluate(uow: UnitOfWork, settings: Settings, principal: Principal, order: Order) -> None:
    """Confirm the order, or open an approval request with every rule its terms trip, in order."""
    rules = approvals.policy(uow)
    lines = [{"qty": ln.qty, "list_price": ln.list_price, "line_total": ln.line_total} for ln in order.lines]
    metrics = domain.order_metrics(lines, order.total, order.cost, order.payment_terms_days, order.delivery_date,
                                   utcnow().date())
    reasons = domain.tripped_rules(rules.document, metrics)
    terms = terms_of(order)
    if not reasons:
        _confirm(uow, settings, order, terms, principal.user_id)
        return
    _move(order, "pending_approval")
    order.approved_terms = None
    uow.session.flush()
    approval = approvals.open_approval(uow, settings, order, terms, principal.user_id, reasons,
                                       domain.approval_chain(rules.document, reasons, metrics), rules.version)
    record(uow, order, principal.user_id, "approval_requested", approval_id=str(approval.id),
           rules=[r["rule"] for r in reasons])


def submit(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID, check_version) -> Order:
    order = writable_order(uow, principal, order_id)
    check_version(order.version)
    if order.status != "draft":
        raise Conflict(f"a {order.status} order is not a draft to submit")
    render(uow, [order])
    if not order.lines:
        raise Conflict("an order without lines cannot be submitted")
    if order.delivery_date is None:  # the delivery-lead rules read it: no date, no way to judge them
        raise ValidationFailed("an order needs a delivery date to be submitted",
                               errors={"delivery_date": ["set it before submitting"]})
    order.rejection_reason = None
    record(uow, order, principal.user_id, "submitted")
    _evaluate(uow, settings, principal, order)
    order_event(uow, settings, ORDER_SUBMITTED, order, principal.user_id)
    return order


def resubmit(uow: UnitOfWork, settings: Settings, principal: Principal, order: Order, reason: str) -> None:
    """The terms of an order under approval, or approved, changed: what was approved no longer
    applies. The open request is superseded and the order is evaluated afresh."""
    approvals.close_open_request(uow, settings, order, "superseded", principal.user_id)
    order.approved_terms = None  # credited_to stays: credit earned is not moved by an edit
    order.status = "draft"  # evaluated from the start, as a submission would be
    record(uow, order, principal.user_id, "approval_reopened", reason=reason)
    _evaluate(uow, settings, principal, order)
    order_event(uow, settings, ORDER_SUBMITTED, order, principal.user_id, reason=reason)


def _confirm(uow: UnitOfWork, settings: Settings, order: Order, terms: str, actor: str) -> None:
    if terms != terms_of(order):  # defence in depth: approvals are superseded by edits already
        raise Conflict("the order's terms are not the ones approved")
    _move(order, "confirmed")
    # Credited once, to the owner at the first confirmation: re-confirming after an edit (by an heir,
    # say) does not move credit already earned.
    order.approved_terms, order.credited_to = terms, order.credited_to or order.owner_id
    uow.session.flush()
    record(uow, order, actor, "confirmed")
    order_event(uow, settings, ORDER_CONFIRMED, order, actor)


def confirm_approved(uow: UnitOfWork, settings: Settings, order: Order, approval: Approval, actor: str) -> None:
    render(uow, [order])
    _confirm(uow, settings, order, approval.terms, actor)


def return_to_draft(uow: UnitOfWork, settings: Settings, order: Order, actor: str, reason: str | None) -> None:
    _move(order, "draft")
    order.rejection_reason = reason
    uow.session.flush()
    order_event(uow, settings, ORDER_UPDATED, order, actor, changed=["status"], reason=reason)


def fulfill(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID, check_version) -> Order:
    order = writable_order(uow, principal, order_id)
    check_version(order.version)
    _move(order, "fulfilled")
    uow.session.flush()
    record(uow, order, principal.user_id, "fulfilled")
    order_event(uow, settings, ORDER_FULFILLED, order, principal.user_id)
    _paid_if_settled(uow, settings, order, principal.user_id)
    return order


def _paid_if_settled(uow: UnitOfWork, settings: Settings, order: Order, actor: str) -> None:
    if order.status == "fulfilled" and order.outstanding <= 0:
        _move(order, "paid")
        uow.session.flush()
        record(uow, order, actor, "paid")
        order_event(uow, settings, ORDER_PAID, order, actor)


def pay(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID, body: dict) -> Order:
    """Money collected: partial payments add up; more than is outstanding is refused, and a date in
    the future is not a payment yet."""
    order = writable_order(uow, principal, order_id)
    if order.status not in domain.PAYABLE:
        raise Conflict(f"a {order.status} order takes no payment")
    amount, paid_on = body["amount"], body["paid_on"]
    if amount <= 0:
        raise ValidationFailed("a payment is more than zero", errors={"amount": ["more than 0.00"]})
    if amount > order.outstanding:
        raise ValidationFailed("more than is outstanding",
                               errors={"amount": [f"at most {order.outstanding} is outstanding"]})
    if paid_on > utcnow().date() + dt.timedelta(days=1):  # a day's grace for time zones ahead of UTC
        raise ValidationFailed("a payment is recorded when it is made", errors={"paid_on": ["in the future"]})
    payment = Payment(id=uuid.uuid4(), order_id=order.id, amount=amount, paid_on=paid_on,
                      reference=body.get("reference"), recorded_by=principal.user_id, recorded_at=utcnow())
    uow.session.add(payment)
    order.collected += amount
    order.updated_at = utcnow()
    uow.session.flush()
    record(uow, order, principal.user_id, "payment_recorded", amount=str(amount), paid_on=paid_on.isoformat())
    order_event(uow, settings, ORDER_PAYMENT_RECORDED, order, principal.user_id,
                payment={"id": payment.id, "amount": amount, "paid_on": paid_on})
    _paid_if_settled(uow, settings, order, principal.user_id)
    return order


def payments(uow: UnitOfWork, principal: Principal, order_id: uuid.UUID) -> list[Payment]:
    from .orders import visible_order

    visible_order(uow, principal, order_id)
    return uow.session.execute(select(Payment).where(Payment.order_id == order_id)
                               .order_by(Payment.paid_on, Payment.recorded_at)).scalars().all()


def set_payment_plan(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID,
                     instalments: list[dict]) -> Order:
    """The instalments replace the plan; they add up to the order's total (an empty list removes it)."""
    order = writable_order(uow, principal, order_id)
    if order.status in ("paid", "cancelled"):
        raise Conflict(f"a {order.status} order has no payment plan")
    total = sum((i["amount"] for i in instalments), Decimal("0.00"))
    if instalments and total != order.total:
        raise ValidationFailed("the instalments add up to the order's total",
                               errors={"instalments": [f"they add up to {total}, the order is {order.total}"]})
    if len({i["due_on"] for i in instalments}) != len(instalments):
        raise ValidationFailed("one instalment per due date", errors={"instalments": ["two share a due date"]})
    last = domain.latest_due_date(order.delivery_date, order.payment_terms_days, utcnow().date())
    if instalments and max(i["due_on"] for i in instalments) > last:
        # Later instalments are longer payment terms: change payment_terms_days, which approval sees.
        raise ValidationFailed("an instalment falls due after the order's payment terms",
                               errors={"instalments": [f"due by {last.isoformat()} ({order.payment_terms_days} days "
                                                       "from delivery); longer terms need approval"]})
    uow.session.execute(delete(Instalment).where(Instalment.order_id == order.id))
    uow.session.add_all(Instalment(order_id=order.id, position=i, due_on=row["due_on"], amount=row["amount"])
                        for i, row in enumerate(sorted(instalments, key=lambda r: r["due_on"])))
    order.updated_at = utcnow()
    uow.session.flush()
    record(uow, order, principal.user_id, "payment_plan_set", instalments=len(instalments))
    order_event(uow, settings, ORDER_UPDATED, order, principal.user_id, changed=["payment_plan"])
    return order


def cancel(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID, reason: str | None,
           check_version, *, drafts_only: bool = False) -> Order:
    """Cancel an order not yet delivered; one with money collected on it needs that money refunded
    first (not built: 409 says so)."""
    order = writable_order(uow, principal, order_id)
    check_version(order.version)
    if drafts_only and order.status != "draft":
        raise Conflict(f"only a draft is deleted; cancel a {order.status} order instead")
    if order.collected > 0:
        raise Conflict("money was collected on this order; refund it before cancelling")
    _move(order, "cancelled")
    approvals.close_open_request(uow, settings, order, "cancelled", principal.user_id)
    uow.session.flush()
    record(uow, order, principal.user_id, "cancelled", reason=reason)
    order_event(uow, settings, ORDER_CANCELLED, order, principal.user_id, reason=reason)
    return order
