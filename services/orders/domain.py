"""Orders rules without I/O: who may see what a product costs, and what its margin is."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Unit cost and margin are money a seller must not see (CONTRACT §2): the price they quote is the
# list price; what the company pays for it is for those who set prices and approve discounts.
COST_HIDDEN_FROM = ("rep", "service", "marketing")
# Those who sell or serve what is sold (policy.toml's deal_readers): list prices are money, which
# marketing does not see.
CATALOGUE_READERS = ("rep", "manager", "executive", "service", "admin")


def margin_pct(price: Decimal, unit_cost: Decimal | None) -> Decimal | None:
    """Gross margin of selling at `price`, in percent of the price (one decimal); None when the cost
    is unknown or the price is zero (a free sample has no margin to speak of)."""
    if unit_cost is None or price <= 0:
        return None
    return ((price - unit_cost) * 100 / price).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# ---- orders: money on the server, never taken from the client -------------------------------------------
CENT = Decimal("0.01")
STATUSES = ("draft", "pending_approval", "confirmed", "fulfilled", "paid", "cancelled")
# Where an order may go from each status (submit, approve or reject, fulfil, pay, cancel). Paid and
# cancelled are final; a fulfilled order is only cancelled by a credit note, which is not built.
TRANSITIONS = {
    "draft": frozenset({"pending_approval", "confirmed", "cancelled"}),
    "pending_approval": frozenset({"draft", "confirmed", "cancelled"}),
    "confirmed": frozenset({"fulfilled", "paid", "cancelled"}),
    "fulfilled": frozenset({"paid"}),
    "paid": frozenset(),
    "cancelled": frozenset(),
}


def line_total(qty: int, unit_price: Decimal, discount_pct: Decimal) -> Decimal:
    """qty x unit price less the discount, to the cent (half up, as an invoice rounds)."""
    return (Decimal(qty) * unit_price * (Decimal(100) - discount_pct) / Decimal(100)).quantize(CENT, ROUND_HALF_UP)


def order_totals(lines: list[tuple[Decimal, Decimal | None, int]]) -> tuple[Decimal, Decimal | None]:
    """(total, gross margin) of lines given as (line total, unit cost, qty). The margin is unknown
    (None) when any line's cost is: a partial margin would look better than it is."""
    total = sum((t for t, _, _ in lines), Decimal("0.00"))
    if any(cost is None for _, cost, _ in lines):
        return total, None
    return total, total - sum((cost * qty for _, cost, qty in lines), Decimal("0.00"))


def may_move(status: str, to: str) -> bool:
    return to in TRANSITIONS.get(status, frozenset())


def counts_toward_quota(type_counts: bool, type_key: str, house_account: bool,
                        excluded_skus: list[str]) -> tuple[bool, str]:
    """Whether an order counts toward its owner's quota, and why (CONTRACT §4: by order type, by
    customer, by product). The first reason that stops it is the one given."""
    if not type_counts:
        return False, f"order type {type_key} does not count toward quota"
    if house_account:
        return False, "a house account: its orders do not count toward a rep's quota"
    if excluded_skus:
        return False, f"products excluded from quota: {', '.join(sorted(excluded_skus))}"
    return True, f"order type {type_key} counts toward quota"
