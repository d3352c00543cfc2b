"""Orders rules without I/O: who may see what things cost, the money of an order, its life, why it
counts toward quota, and which approval rules its terms trip and who must then decide."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
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
# A confirmed order whose terms change goes back through approval (pending_approval); a confirmed
# order paid in full before delivery becomes paid when it is fulfilled.
TRANSITIONS = {
    "draft": frozenset({"pending_approval", "confirmed", "cancelled"}),
    "pending_approval": frozenset({"draft", "confirmed", "cancelled"}),
    "confirmed": frozenset({"pending_approval", "fulfilled", "cancelled"}),
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


def counts_toward_quota(type_counts: bool, type_key: str, house_account: bool, excluded_skus: list[str],
                        line_count: int) -> tuple[bool, str]:
    """Whether an order counts toward its owner's quota, and why (CONTRACT §4: by order type, by
    customer, by product). The first reason that stops it is the one given; products excluded from
    quota leave the rest of the order counting (their lines do not)."""
    if not type_counts:
        return False, f"order type {type_key} does not count toward quota"
    if house_account:
        return False, "a house account: its orders do not count toward a rep's quota"
    excluded = ", ".join(sorted(set(excluded_skus)))
    if excluded_skus and len(excluded_skus) >= line_count:
        return False, f"every product is excluded from quota: {excluded}"
    if excluded_skus:
        return True, f"order type {type_key} counts toward quota, except products excluded from it: {excluded}"
    return True, f"order type {type_key} counts toward quota"


# Where the commercial terms may still change (price, discount, quantity, payment terms, delivery);
# in the last two such a change re-opens approval.
EDITABLE = frozenset({"draft", "pending_approval", "confirmed"})
PAYABLE = frozenset({"confirmed", "fulfilled"})
OPEN = frozenset({"draft", "pending_approval", "confirmed", "fulfilled"})  # what a handover moves
DEFAULT_TERMS_DAYS = 30  # net 30, the commonest; the approval policy decides what longer terms need
MAX_LINES = 200
MAX_QTY = 1_000_000
MONEY_LIMIT = Decimal(10) ** 12  # Numeric(14, 2)


def effective_discount(qty: int, list_price: Decimal, line_total: Decimal) -> Decimal:
    """How far below the list price a line sells, in percent: a lowered unit price is a discount as
    much as discount_pct is, so approval rules read this, not the field a client set."""
    full = Decimal(qty) * list_price
    if full <= 0:
        return Decimal("0.00")
    return max(Decimal("0.00"), ((full - line_total) * 100 / full).quantize(CENT, ROUND_HALF_UP))


def terms_fingerprint(lines: list[dict], payment_terms_days: int, delivery_date: dt.date | None,
                      currency: str, order_type: str) -> str:
    """The commercial terms an approval is for, as one digest: any change to them is a new request."""
    doc = {"lines": [[ln["sku"], ln["qty"], str(ln["unit_price"]), str(ln["discount_pct"])] for ln in lines],
           "terms": payment_terms_days, "delivery": delivery_date.isoformat() if delivery_date else None,
           "currency": currency, "type": order_type}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ---- approval policy ------------------------------------------------------------------------------------
LEVELS = ("manager", "parent_manager", "executive")  # the chain runs upward, never back down
METRICS = ("discount_pct", "total", "payment_terms_days", "delivery_lead_days", "gross_margin_pct")
# Metrics whose values are margin or cost: a reason naming them shows no numbers to those who may not see cost.
COST_METRICS = frozenset({"gross_margin_pct"})

DEFAULT_POLICY = {
    "rules": [
        {"key": "discount-over-10", "metric": "discount_pct", "op": "above", "threshold": "10", "chain": ["manager"]},
        {"key": "discount-over-25", "metric": "discount_pct", "op": "above", "threshold": "25",
         "chain": ["manager", "executive"]},
        {"key": "terms-over-60", "metric": "payment_terms_days", "op": "above", "threshold": "60",
         "chain": ["manager"]},
        {"key": "delivery-within-7", "metric": "delivery_lead_days", "op": "below", "threshold": "7",
         "chain": ["manager"]},
    ],
    "limits": {},
    "escalate_after_hours": 48,
}


def order_metrics(lines: list[dict], total: Decimal, cost: Decimal | None, payment_terms_days: int,
                  delivery_date: dt.date | None, today: dt.date) -> dict:
    """What the rules read of an order. Unknown values (no delivery date, a margin with unknown cost) are None."""
    margin = None
    if cost is not None and total > 0:
        margin = ((total - cost) * 100 / total).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return {
        "discount_pct": max((effective_discount(ln["qty"], ln["list_price"], ln["line_total"]) for ln in lines),
                            default=Decimal("0.00")),
        "total": total,
        "payment_terms_days": Decimal(payment_terms_days),
        "delivery_lead_days": None if delivery_date is None else Decimal((delivery_date - today).days),
        "gross_margin_pct": margin,
    }


def tripped_rules(policy: dict, metrics: dict) -> list[dict]:
    """The rules the order's values break, each with the value that broke it. A margin rule is broken
    by an unknown margin too: a cost nobody entered must not wave a loss through."""
    out = []
    for rule in policy.get("rules", []):
        value, threshold = metrics.get(rule["metric"]), Decimal(rule["threshold"])
        if value is None:
            if rule["metric"] != "gross_margin_pct":
                continue
            broken = True
        else:
            broken = value > threshold if rule["op"] == "above" else value < threshold
        if broken:
            out.append({"rule": rule["key"], "metric": rule["metric"], "op": rule["op"],
                        "threshold": rule["threshold"], "value": None if value is None else str(value),
                        "chain": list(rule["chain"])})
    return out


def approval_chain(policy: dict, reasons: list[dict], metrics: dict) -> list[str]:
    """The levels that must approve, lowest first: every level a tripped rule names, and above a
    level whose limit the order exceeds, the next level up (a manager may approve discounts to 20%
    only, say)."""
    wanted = {level for reason in reasons for level in reason["chain"]}
    limits = policy.get("limits") or {}
    for i, level in enumerate(LEVELS[:-1]):
        if level not in wanted:
            continue
        for metric, limit in (limits.get(level) or {}).items():
            value = metrics.get(metric)
            if value is not None and value > Decimal(limit):
                wanted.add(LEVELS[i + 1])
    return [level for level in LEVELS if level in wanted]


def next_level(level: str) -> str | None:
    i = LEVELS.index(level)
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None


# ---- order numbers --------------------------------------------------------------------------------------
NUMBER_SPACE = 1_000_000  # SO-2026-000123: six digits a year


def order_number_code(sequence: int, key: bytes) -> int:
    """The sequence-th order of a year (0-based) as a six-digit code: a keyed permutation of
    0..999,999 (a four-round Feistel network on 20 bits, walking the cycle back into range), so
    numbers stay unique and short, but the gap between two of a rep's orders says nothing about how
    many orders other teams placed in between."""
    if not 0 <= sequence < NUMBER_SPACE:
        raise ValueError("the year's numbers are used up")
    value = sequence
    while True:
        left, right = value >> 10, value & 0x3FF
        for round_ in range(4):
            digest = hashlib.blake2b(bytes([round_]) + right.to_bytes(2, "big"), key=key, digest_size=2).digest()
            left, right = right, left ^ (int.from_bytes(digest, "big") & 0x3FF)
        value = (left << 10) | right
        if value < NUMBER_SPACE:
            return value


def latest_due_date(delivery_date: dt.date | None, payment_terms_days: int, today: dt.date) -> dt.date:
    """The last day an instalment may fall due: the order's payment terms from delivery (or today,
    when no date is set). A plan stretching further is longer terms, which only an approval grants."""
    return max(delivery_date or today, today) + dt.timedelta(days=payment_terms_days)


# ---- payments -------------------------------------------------------------------------------------------
def allocate(instalments: list[tuple[dt.date, Decimal]], collected: Decimal, today: dt.date) -> list[dict]:
    """Payments matched to the plan's instalments, earliest due first: what each has been paid, what
    is still owed on it, and whether it is overdue."""
    left, out = collected, []
    for due_on, amount in sorted(instalments):
        paid = min(amount, left)
        left -= paid
        owed = amount - paid
        out.append({"due_on": due_on, "amount": amount, "paid": paid, "outstanding": owed,
                    "overdue": owed > 0 and due_on < today})
    return out
