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


def test_a_line_total_rounds_half_up_to_the_cent():
    from services.orders.domain import line_total

    assert line_total(3, Decimal("19.99"), Decimal("0")) == Decimal("59.97")
    assert line_total(1, Decimal("0.05"), Decimal("50")) == Decimal("0.03")  # 0.025 -> 0.03
    assert line_total(2, Decimal("480000.00"), Decimal("30")) == Decimal("672000.00")
    assert line_total(5, Decimal("10.00"), Decimal("100")) == Decimal("0.00")


def test_the_margin_is_unknown_when_any_cost_is():
    from services.orders.domain import order_totals

    lines = [(Decimal("672000.00"), Decimal("312000.00"), 2), (Decimal("59.97"), Decimal("5.00"), 3)]
    assert order_totals(lines) == (Decimal("672059.97"), Decimal("48044.97"))
    assert order_totals([*lines, (Decimal("10.00"), None, 1)]) == (Decimal("672069.97"), None)
    assert order_totals([]) == (Decimal("0.00"), Decimal("0.00"))


def test_an_order_moves_only_along_its_life():
    from services.orders.domain import STATUSES, may_move

    assert may_move("draft", "pending_approval") and may_move("pending_approval", "draft")
    assert may_move("confirmed", "fulfilled") and may_move("fulfilled", "paid")
    for final in ("paid", "cancelled"):
        assert not any(may_move(final, to) for to in STATUSES)
    assert not may_move("draft", "paid") and not may_move("fulfilled", "cancelled")
    assert not may_move("pending_approval", "fulfilled") and not may_move("unknown", "draft")


def test_why_an_order_counts_or_not():
    from services.orders.domain import counts_toward_quota

    assert counts_toward_quota(True, "standard", False, [], 2) == (True, "order type standard counts toward quota")
    assert counts_toward_quota(False, "sample", False, [], 1)[0] is False
    assert "sample" in counts_toward_quota(False, "sample", True, ["X"], 1)[1]  # the first reason given
    assert counts_toward_quota(True, "repeat", True, [], 1)[1].startswith("a house account")
    # Some lines excluded: the order counts, those lines do not; all of them: it does not count.
    assert counts_toward_quota(True, "standard", False, ["B-2", "A-1"], 3) == \
        (True, "order type standard counts toward quota, except products excluded from it: A-1, B-2")
    assert counts_toward_quota(True, "standard", False, ["B-2", "A-1"], 2) == \
        (False, "every product is excluded from quota: A-1, B-2")
