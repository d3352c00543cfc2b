"""Issue 16's pure rules: periods to months, targets spread by distribution, attainment, KPI score."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders.scorecard import attainment, check_distribution, months_of, target_for, weighted_score


def test_a_period_covers_its_months():
    assert months_of("2026-Q4") == ["2026-10", "2026-11", "2026-12"]
    assert months_of("2026-11") == ["2026-11"]
    assert len(months_of("2026")) == 12 and months_of("2026")[0] == "2026-01"


def test_a_quarter_target_spreads_by_its_distribution_or_evenly():
    shares = check_distribution("2026-Q4", {"2026-10": Decimal(30), "2026-11": Decimal(30), "2026-12": Decimal(40)})
    assert target_for(Decimal("900000.00"), "2026-Q4", shares, "2026-12") == Decimal("360000.00")
    assert target_for(Decimal("900000.00"), "2026-Q4", shares, "2026-Q4") == Decimal("900000.00")
    assert target_for(Decimal("900000.00"), "2026-Q4", shares, "2026-09") is None  # not inside
    even = check_distribution("2026-Q4", None)
    assert sum(even.values()) == 100
    assert target_for(Decimal("900000.00"), "2026-Q4", even, "2026-10") == Decimal("300000.00")


@pytest.mark.parametrize("distribution, message", [
    ({"2026-10": Decimal(50), "2026-11": Decimal(40)}, "total 90"),
    ({"2026-10": Decimal(50), "2027-01": Decimal(50)}, "outside"),
    ({"2026-10": Decimal(110), "2026-11": Decimal(-10)}, "not negative"),
])
def test_a_distribution_that_does_not_add_up_is_refused(distribution, message):
    with pytest.raises(ValueError, match=message):
        check_distribution("2026-Q4", distribution)


def test_attainment_and_the_weighted_score_with_caps():
    assert attainment(Decimal("40000"), Decimal("100000")) == Decimal("40.0")
    assert attainment(Decimal("5"), None) is None and attainment(Decimal("5"), Decimal(0)) is None
    scheme = [{"metric": "revenue", "weight": 50, "cap_pct": 120}, {"metric": "new_accounts", "weight": 20},
              {"metric": "activities", "weight": 15}, {"metric": "collections", "weight": 15, "cap_pct": 150}]
    score = weighted_score(scheme, {"revenue": Decimal("150.0"), "new_accounts": Decimal("50.0"),
                                    "activities": None, "collections": Decimal("200.0")})
    assert score == Decimal("92.5")  # 50 x 1.2 + 20 x 0.5 + 0 + 15 x 1.5
