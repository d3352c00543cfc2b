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
