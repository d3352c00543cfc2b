"""Account tiers from trailing-12-month revenue (A: the accounts making the top 80%, B: the next
15%, C: the rest; domain.tiers_by_revenue), fed by crm.orders.v1.

The consumer only records each order's revenue and marks the tiers stale; the worker's tier loop
recomputes them (once per burst of orders, and daily, since revenue also ages out of the window)
and publishes account.tier_changed for each account whose tier moved."""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from decimal import Decimal

from marshmallow import ValidationError
from sqlalchemy import func, select

from crmkit.consumer import Reject
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings

from . import domain
from .db import Account, AccountRevenue, TierState
from .events import ORDER_CANCELLED, REVENUE_EVENTS, event
from .schemas import OrderRevenueSchema

log = logging.getLogger(__name__)
WINDOW = dt.timedelta(days=365)
RECOMPUTE_EVERY = dt.timedelta(days=1)
TIERS = "tiers"
_order_schema = OrderRevenueSchema()


def _state(uow: UnitOfWork) -> TierState:
    """The one state row, locked until commit: a recompute and new revenue never interleave, so the
    "revenue arrived since" flag cannot be cleared by a recompute that did not see that revenue."""
    return uow.session.get(TierState, TIERS, with_for_update=True) or TierState(name=TIERS)


def _mark_stale(uow: UnitOfWork) -> None:
    state = _state(uow)
    state.dirty = True
    uow.session.add(state)


def _order(envelope: dict) -> dict:
    try:
        return _order_schema.load((envelope["data"] or {}).get("order") or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope['type']}: {exc.messages}") from None


def record_revenue(uow: UnitOfWork, envelope: dict) -> None:
    """order.confirmed / order.paid: the order's revenue counts, once per order, at its latest amount."""
    order = _order(envelope)
    row = uow.session.get(AccountRevenue, order["id"])
    if row is None:
        row = AccountRevenue(order_id=order["id"], occurred_at=envelope["time"])
    row.account_id, row.amount, row.status = order["account_id"], order["total"], envelope["type"].split(".")[1]
    row.recorded_at = utcnow()
    uow.session.add(row)
    _mark_stale(uow)


def take_back_revenue(uow: UnitOfWork, envelope: dict) -> None:
    """order.cancelled: the order's revenue no longer counts."""
    row = uow.session.get(AccountRevenue, _order(envelope)["id"])
    if row is not None:
        uow.session.delete(row)
        _mark_stale(uow)


# crm.orders.v1, for the worker's consumer; other order events are not this service's business.
ORDER_HANDLERS = {**{(kind, 1): record_revenue for kind in sorted(REVENUE_EVENTS)},
                  (ORDER_CANCELLED, 1): take_back_revenue}


def recompute(uow: UnitOfWork, settings: Settings, now: dt.datetime | None = None) -> dict[str, str]:
    """Set every account's tier from the revenue in the window; returns {account_id: new tier} of
    those that changed."""
    now = now or utcnow()
    state = _state(uow)
    in_window = AccountRevenue.occurred_at >= now - WINDOW
    revenue = {str(account_id): amount for account_id, amount in uow.session.execute(
        select(AccountRevenue.account_id, func.sum(AccountRevenue.amount)).where(in_window)
        .group_by(AccountRevenue.account_id))}
    wanted = domain.tiers_by_revenue({k: Decimal(v) for k, v in revenue.items()})
    changed = {}
    # Accounts that had a tier and no revenue now fall back to unranked; only rows that change are touched.
    accounts = uow.session.execute(select(Account).where(
        (Account.tier != "unranked") | Account.id.in_(select(AccountRevenue.account_id).where(in_window))
    )).scalars().all()
    for account in accounts:
        tier = wanted.get(str(account.id), "unranked")
        if account.tier != tier:
            previous, account.tier, account.updated_at = account.tier, tier, now
            changed[str(account.id)] = tier
            uow.session.flush()
            uow.publish(*event(settings, "account.tier_changed", account.id, {
                "account_id": str(account.id), "from": previous, "to": tier,
                "revenue_12m": str(revenue.get(str(account.id), Decimal("0"))),
                "account": account}, actor=None))
    state.dirty, state.computed_at = False, now
    uow.session.add(state)
    return changed


def tier_loop(db: Database, settings: Settings, stop: threading.Event) -> None:
    """The worker's schedule: recompute when orders arrived, and at least daily."""
    interval = float(os.environ.get("OPPORTUNITIES_TIER_INTERVAL_SECONDS", "30"))
    while not stop.wait(interval):
        try:
            with db.uow() as uow:
                state = uow.session.get(TierState, TIERS)  # a peek; recompute() locks it
                due = state is None or state.dirty or state.computed_at is None \
                    or utcnow() - state.computed_at >= RECOMPUTE_EVERY
                if due:
                    changed = recompute(uow, settings)
                    uow.commit()
                    if changed:
                        log.info("account tiers changed", extra={"changed": len(changed)})
        except Exception:  # a schedule must outlive one bad run; it logs and tries again
            log.exception("tier recompute failed")
