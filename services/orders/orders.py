"""Orders: create (by hand or by duplicating one), read, list, edit. Lines are priced on the server
from the catalogue; totals, margin and whether the order counts toward quota are derived, never
taken from the client. An edit of the commercial terms of an order under approval or approved
re-opens approval (lifecycle.resubmit). Each use case leaves the commit to its caller."""
from __future__ import annotations

import datetime as dt
import secrets
import uuid
from decimal import Decimal

from sqlalchemy import delete, func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crmkit.pagination import paginate, parse_sort
from crmkit.settings import Settings
from crmkit.visibility import SEES_EVERYTHING

from . import domain
from .db import (
    AccountMemberReplica,
    AccountReplica,
    Instalment,
    Order,
    OrderCounter,
    OrderHistory,
    OrderLine,
    OrderType,
    Product,
    order_visible,
)
from .events import ORDER_CREATED, ORDER_UPDATED, event

ORDER_SORTABLE = {"created_at", "updated_at", "total"}
# Fields whose change alters what was (or must be) approved.
COMMERCIAL = frozenset({"lines", "payment_terms_days", "delivery_date", "type", "currency"})
LEADERS = frozenset({"manager", "executive", "admin"})


# ---- reading -----------------------------------------------------------------------------------------
def visible_order(uow: UnitOfWork, principal: Principal, order_id: uuid.UUID, *, for_update=False) -> Order:
    stmt = select(Order).where(Order.id == order_id, order_visible(principal))
    if for_update:
        stmt = stmt.with_for_update(of=Order)
    order = uow.session.execute(stmt).scalar_one_or_none()
    if order is None:
        raise NotFound(f"order {order_id} not found")
    return order


def may_write(principal: Principal, order: Order) -> bool:
    """Reps work their own orders, managers their teams' and their own, executives and admins all;
    service staff read only (a virtual-team member sees the order, does not sell it)."""
    if principal.role in SEES_EVERYTHING:
        return True
    if principal.role in ("rep", "manager") and order.owner_id == principal.user_id:
        return True
    return principal.role == "manager" and order.team_id in principal.manages


def writable_order(uow: UnitOfWork, principal: Principal, order_id: uuid.UUID) -> Order:
    order = visible_order(uow, principal, order_id, for_update=True)
    if not may_write(principal, order):
        raise Forbidden("you may read this order, not change it")
    return order


def lines_of(uow: UnitOfWork, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list]:
    """The orders' lines as read-only rows (attribute access like the mapped class, without the cost
    of ORM objects: a list page reads hundreds)."""
    out: dict[uuid.UUID, list] = {i: [] for i in order_ids}
    if order_ids:
        columns = list(OrderLine.__table__.c)
        for line in uow.session.execute(select(*columns).where(OrderLine.order_id.in_(order_ids))
                                        .order_by(OrderLine.order_id, OrderLine.position)):
            out[line.order_id].append(line)
    return out


def plans_of(uow: UnitOfWork, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Instalment]]:
    out: dict[uuid.UUID, list[Instalment]] = {i: [] for i in order_ids}
    if order_ids:
        for row in uow.session.execute(select(Instalment).where(Instalment.order_id.in_(order_ids))
                                       .order_by(Instalment.order_id, Instalment.position)).scalars():
            out[row.order_id].append(row)
    return out


def render(uow: UnitOfWork, orders: list[Order], today: dt.date | None = None) -> list[Order]:
    """Attach what the API shows beside the row: lines, and the payment plan with what is paid on it."""
    ids = [o.id for o in orders]
    lines, plans = lines_of(uow, ids), plans_of(uow, ids)
    today = today or utcnow().date()
    for o in orders:
        o.lines = lines[o.id]
        o.payment_plan = domain.allocate([(i.due_on, i.amount) for i in plans[o.id]], o.collected, today)
    return orders


def get_order(uow: UnitOfWork, principal: Principal, order_id: uuid.UUID) -> Order:
    return render(uow, [visible_order(uow, principal, order_id)])[0]


def list_orders(uow: UnitOfWork, principal: Principal, args: dict):
    stmt = select(Order).where(order_visible(principal))
    for name in ("account_id", "status", "owner_id", "team_id", "type", "opportunity_id"):
        if args.get(name) is not None:
            stmt = stmt.where(getattr(Order, name) == args[name])
    if args.get("counts_toward_quota") is not None:
        stmt = stmt.where(Order.counts_toward_quota.is_(args["counts_toward_quota"]))
    if args.get("q"):
        stmt = stmt.where(func.lower(Order.number).like(f"%{args['q'].lower()}%"))
    sort = parse_sort(args.get("sort"), ORDER_SORTABLE, "-created_at")
    rows, cursor = paginate(uow.session, stmt, model=Order, sort=sort, limit=args["limit"], cursor=args.get("cursor"))
    return render(uow, rows), cursor


def history(uow: UnitOfWork, principal: Principal, order_id: uuid.UUID) -> list[OrderHistory]:
    visible_order(uow, principal, order_id)
    return uow.session.execute(select(OrderHistory).where(OrderHistory.order_id == order_id)
                               .order_by(OrderHistory.at, OrderHistory.id)).scalars().all()


def record(uow: UnitOfWork, order: Order, actor: str | None, action: str, **detail) -> None:
    uow.session.add(OrderHistory(id=uuid.uuid4(), order_id=order.id, at=utcnow(), actor=actor, action=action,
                                 detail=detail))


def order_event(uow: UnitOfWork, settings: Settings, kind: str, order: Order, actor, **extra) -> None:
    if not hasattr(order, "lines"):
        render(uow, [order])
    uow.publish(*event(settings, kind, order.id, {"order": order, **extra}, actor=actor))


# ---- pricing: lines from the catalogue ----------------------------------------------------------------------
def _products(uow: UnitOfWork, skus: list[str]) -> dict[str, Product]:
    lowered = sorted({s.lower() for s in skus})
    rows = uow.session.execute(select(Product).where(func.lower(Product.sku).in_(lowered))).scalars().all()
    return {p.sku.lower(): p for p in rows}


def price_lines(uow: UnitOfWork, wanted: list[dict], currency: str | None, *, allow_inactive=frozenset(),
                ) -> tuple[list[dict], str]:
    """Lines as sold, from what the client asked for: the catalogue's name, category, list price and
    cost; the unit price the client set (the list price by default) and the discount. Unknown or
    inactive products, a mix of currencies, and totals beyond what money columns hold are 422s,
    each naming its line. `allow_inactive`: SKUs already on the order (a product withdrawn since
    stays on the orders that had it)."""
    if len(wanted) > domain.MAX_LINES:
        raise ValidationFailed("too many lines", errors={"lines": [f"at most {domain.MAX_LINES} lines"]})
    catalogue = _products(uow, [w["sku"] for w in wanted])
    errors: dict = {}
    lines, currencies = [], {currency} if currency else set()
    for i, w in enumerate(wanted):
        product = catalogue.get(w["sku"].lower())
        if product is None:
            errors[i] = {"sku": [f"no product with SKU {w['sku']}"]}
            continue
        if not product.active and product.sku.lower() not in allow_inactive:
            errors[i] = {"sku": [f"product {product.sku} is no longer sold"]}
            continue
        unit_price = w.get("unit_price")
        unit_price = product.list_price if unit_price is None else unit_price
        discount = w.get("discount_pct") or Decimal("0.00")
        total = domain.line_total(w["qty"], unit_price, discount)
        if total >= domain.MONEY_LIMIT:
            errors[i] = {"qty": ["the line's total is beyond what an order can hold"]}
            continue
        currencies.add(product.currency)
        lines.append({"sku": product.sku, "name": product.name, "category": product.category, "qty": w["qty"],
                      "list_price": product.list_price, "unit_price": unit_price, "discount_pct": discount,
                      "line_total": total, "unit_cost": product.unit_cost,
                      "excluded_from_quota": product.excluded_from_quota})
    if errors:
        raise ValidationFailed("some lines cannot be sold", errors={"lines": errors})
    if len(currencies) > 1:
        raise ValidationFailed("an order is in one currency",
                               errors={"lines": [f"products priced in {', '.join(sorted(currencies))}"]})
    if sum((ln["line_total"] for ln in lines), Decimal(0)) >= domain.MONEY_LIMIT \
            or sum((ln["unit_cost"] * ln["qty"] for ln in lines if ln["unit_cost"] is not None),
                   Decimal(0)) >= domain.MONEY_LIMIT:  # a 100% discount makes the total small, not the cost
        raise ValidationFailed("the order's total is beyond what an order can hold", errors={"lines": ["too large"]})
    return lines, (currencies.pop() if currencies else None)


def _order_type(uow: UnitOfWork, key: str) -> OrderType:
    row = uow.session.get(OrderType, key)
    if row is None:
        raise ValidationFailed(f"no order type {key}", errors={"type": [f"unknown order type {key!r}"]})
    return row


def apply_lines(uow: UnitOfWork, order: Order, lines: list[dict]) -> None:
    """The order's lines become these, and its totals, cost and quota standing follow."""
    uow.session.execute(delete(OrderLine).where(OrderLine.order_id == order.id))
    rows = [OrderLine(order_id=order.id, position=i, **ln) for i, ln in enumerate(lines)]
    uow.session.add_all(rows)
    order.lines = rows
    order.total, margin = domain.order_totals([(ln["line_total"], ln["unit_cost"], ln["qty"]) for ln in lines])
    order.cost = None if margin is None else order.total - margin
    refresh_quota(uow, order)


def refresh_quota(uow: UnitOfWork, order: Order) -> None:
    kind = uow.session.get(OrderType, order.type)
    account = uow.session.get(AccountReplica, order.account_id)
    excluded = [ln.sku for ln in order.lines if ln.excluded_from_quota]
    order.counts_toward_quota, order.quota_reason = domain.counts_toward_quota(
        bool(kind and kind.counts_toward_quota), order.type, bool(account and account.house_account), excluded,
        len(order.lines))
    order.counted_total = sum((ln.line_total for ln in order.lines if not ln.excluded_from_quota), Decimal("0.00")) \
        if order.counts_toward_quota else Decimal("0.00")


def _next_number(uow: UnitOfWork, year: int) -> str:
    """SO-2026-384107: the year's counter (locked until commit), permuted under the year's key."""
    counter = uow.session.get(OrderCounter, year, with_for_update=True)
    if counter is None:
        counter = OrderCounter(year=year, last=0, key=secrets.token_hex(32))
        uow.session.add(counter)
    code = domain.order_number_code(counter.last, bytes.fromhex(counter.key))
    counter.last += 1
    uow.session.flush()  # a second creator of the year's first order fails here and is retried as a 409
    return f"SO-{year}-{code:06d}"


# ---- writing -----------------------------------------------------------------------------------------
def visible_account(uow: UnitOfWork, principal: Principal, account_id: uuid.UUID) -> AccountReplica:
    """An order is placed on an account the caller can see: their own, their teams', one whose virtual
    team lists them; executives and admins any."""
    account = uow.session.get(AccountReplica, account_id)
    if account is None or account.deleted:
        raise ValidationFailed("no such account", errors={"account_id": ["no account with this id"]})
    if principal.role in SEES_EVERYTHING or account.owner_id == principal.user_id \
            or (principal.role == "manager" and account.team_id in principal.manages):
        return account
    member = uow.session.get(AccountMemberReplica, (account_id, principal.user_id))
    if member is None:  # the same answer as an account that does not exist: it tells nothing
        raise ValidationFailed("no such account", errors={"account_id": ["no account with this id"]})
    return account


def new_order(uow: UnitOfWork, settings: Settings, *, account_id, owner_id, team_id, created_by: str,
              order_type: str, lines: list[dict], currency: str | None, payment_terms_days: int,
              delivery_date: dt.date | None, notes: str | None = None, opportunity_id=None,
              duplicated_from=None) -> Order:
    _order_type(uow, order_type)
    now = utcnow()
    order = Order(id=uuid.uuid4(), number=_next_number(uow, now.year), account_id=account_id,
                  opportunity_id=opportunity_id, duplicated_from=duplicated_from, owner_id=owner_id, team_id=team_id,
                  type=order_type, currency=currency or settings.default_currency, collected=Decimal("0.00"),
                  payment_terms_days=payment_terms_days, delivery_date=delivery_date, status="draft", notes=notes,
                  created_by=created_by, created_at=now, updated_at=now, version=1,
                  # set from the lines below, once the row exists for them to refer to
                  total=Decimal("0.00"), counted_total=Decimal("0.00"), counts_toward_quota=False, quota_reason="")
    uow.session.add(order)
    uow.session.flush()
    apply_lines(uow, order, lines)
    uow.session.flush()
    record(uow, order, created_by, "created", **({"opportunity_id": str(opportunity_id)} if opportunity_id else {}),
           **({"duplicated_from": str(duplicated_from)} if duplicated_from else {}))
    order_event(uow, settings, ORDER_CREATED, order, created_by)
    return order


def create_order(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Order:
    visible_account(uow, principal, fields["account_id"])
    lines, currency = price_lines(uow, fields.get("lines", []), fields.get("currency"))
    return new_order(uow, settings, account_id=fields["account_id"], owner_id=principal.user_id,
                     team_id=principal.primary_team, created_by=principal.user_id,
                     order_type=fields.get("type", "standard"), lines=lines, currency=currency,
                     payment_terms_days=fields.get("payment_terms_days", domain.DEFAULT_TERMS_DAYS),
                     delivery_date=fields.get("delivery_date"), notes=fields.get("notes"))


def duplicate_order(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID) -> Order:
    """A copy as a new draft, by the caller: its own number, and its own approval when submitted
    (approving one order never approves another)."""
    source = get_order(uow, principal, order_id)
    if principal.role == "service":
        raise Forbidden("you may read this order, not sell it")
    visible_account(uow, principal, source.account_id)  # still there, and still the caller's to sell to
    wanted = [{"sku": ln.sku, "qty": ln.qty, "unit_price": ln.unit_price, "discount_pct": ln.discount_pct}
              for ln in source.lines]
    lines, currency = price_lines(uow, wanted, source.currency)
    return new_order(uow, settings, account_id=source.account_id, owner_id=principal.user_id,
                     team_id=principal.primary_team, created_by=principal.user_id, order_type=source.type,
                     lines=lines, currency=currency, payment_terms_days=source.payment_terms_days,
                     delivery_date=source.delivery_date, notes=source.notes, duplicated_from=source.id)


def _terms(lines) -> list[tuple]:
    def get(line, name):
        return line[name] if isinstance(line, dict) else getattr(line, name)
    return [(get(ln, "sku"), get(ln, "qty"), get(ln, "unit_price"), get(ln, "discount_pct")) for ln in lines]


def terms_of(order: Order) -> str:
    return domain.terms_fingerprint(
        [{"sku": ln.sku, "qty": ln.qty, "unit_price": ln.unit_price, "discount_pct": ln.discount_pct}
         for ln in order.lines], order.payment_terms_days, order.delivery_date, order.currency, order.type)


def update_order(uow: UnitOfWork, settings: Settings, principal: Principal, order_id: uuid.UUID, changes: dict,
                 check_version) -> Order:
    """PATCH: lines (all of them, replaced), type, payment terms, delivery date, currency, notes. On an
    order under approval or confirmed, a change of terms supersedes the approval and submits the
    order again, so what is confirmed is always what was approved."""
    from . import lifecycle  # the resubmission is lifecycle's; it imports this module at load

    order = writable_order(uow, principal, order_id)
    check_version(order.version)
    if order.status not in domain.EDITABLE:
        raise Conflict(f"a {order.status} order cannot be changed")
    render(uow, [order])
    before = terms_of(order)
    changed = []
    if "type" in changes and changes["type"] != order.type:
        _order_type(uow, changes["type"])
        order.type = changes["type"]
        changed.append("type")
    for name in ("payment_terms_days", "delivery_date", "notes"):
        if name in changes and changes[name] != getattr(order, name):
            setattr(order, name, changes[name])
            changed.append(name)
    if "lines" in changes or "currency" in changes:
        wanted = changes.get("lines")
        if wanted is None:
            wanted = [{"sku": ln.sku, "qty": ln.qty, "unit_price": ln.unit_price, "discount_pct": ln.discount_pct}
                      for ln in order.lines]
        currency = changes.get("currency", order.currency)
        lines, priced_in = price_lines(uow, wanted, currency, allow_inactive={ln.sku.lower() for ln in order.lines})
        if not lines and order.status != "draft":
            raise Conflict("an order under approval or confirmed keeps at least one line; cancel it instead")
        if (priced_in or currency) != order.currency:
            order.currency = priced_in or currency
            changed.append("currency")
        if _terms(lines) != _terms(order.lines):  # the same lines again keep their prices as sold
            apply_lines(uow, order, lines)
            changed.append("lines")
    if "type" in changed and "lines" not in changed:
        refresh_quota(uow, order)
    if not changed:
        return order
    if "lines" in changed:
        # A payment plan was for the old total: it goes, and says so in the history.
        if uow.session.execute(delete(Instalment).where(Instalment.order_id == order.id)).rowcount:
            record(uow, order, principal.user_id, "payment_plan_dropped", reason="the order's lines changed")
    if order.collected > order.total:
        raise Conflict("more has been collected on this order than the new total")
    order.updated_at = utcnow()
    uow.session.flush()
    record(uow, order, principal.user_id, "updated", changed=sorted(set(changed)))
    terms_changed = terms_of(order) != before
    order_event(uow, settings, ORDER_UPDATED, order, principal.user_id, changed=sorted(set(changed)))
    if terms_changed and order.status in ("pending_approval", "confirmed"):
        lifecycle.resubmit(uow, settings, principal, order, "the order's terms changed")
    render(uow, [order])
    return order
