"""The orders service's pure rules."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders.domain import margin_pct


@pytest.mark.parametrize(("price", "cost", "margin"), [
    ("480000.00", "312000.00", "35.0"),
    ("500000.00", "312000.00", "37.6"),
    ("100.00", "100.00", "0.0"),
    ("100.00", "150.00", "-50.0"),   # sold below cost: a negative margin, shown as such
    ("3.00", "1.00", "66.7"),        # rounded half up to one decimal
    ("0.00", "1.00", None),          # a free sample has no margin to speak of
    ("100.00", None, None),          # cost unknown
])
def test_margin_is_a_share_of_the_price(price, cost, margin):
    got = margin_pct(Decimal(price), None if cost is None else Decimal(cost))
    assert (None if got is None else str(got)) == margin
