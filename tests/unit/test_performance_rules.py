"""Issue 16's pure rules: periods to months, targets spread by distribution, attainment, KPI score."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders import scorecard
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


# ---- targets found for a period, commission parts, days of a period -----------------------------------------
class _T:
    def __init__(self, period, value, distribution=None):
        self.period, self.value, self.distribution = period, Decimal(value), distribution


def test_the_target_for_a_period_is_exact_else_a_share_else_a_sum():
    quarter = _T("2026-Q4", "900.00", {"2026-10": "20", "2026-11": "30", "2026-12": "50"})
    assert scorecard.target_in([quarter], "2026-11") == Decimal("270.00")
    assert scorecard.target_in([quarter, _T("2026-11", "100.00")], "2026-11") == Decimal("100.00")
    months = [_T("2026-10", "10.00"), _T("2026-11", "20.00")]
    assert scorecard.target_in(months, "2026-Q4") == Decimal("30.00")
    # A year with one quarter set and a month outside it: the quarter, then the month.
    assert scorecard.target_in([_T("2026-Q1", "300.00"), _T("2026-02", "7.00"), _T("2026-05", "50.00")],
                               "2026") == Decimal("350.00")
    assert scorecard.target_in([], "2026-11") is None


def test_commission_parts_split_where_a_tier_or_the_accelerator_begins():
    tiers = [{"from_pct": "0", "rate_pct": "2"}, {"from_pct": "50", "rate_pct": "4"}]
    accelerator = {"above_pct": "100", "multiplier": "1.5"}
    parts = scorecard.commission_parts(Decimal("4000"), Decimal("3000"), Decimal("5000"), tiers, accelerator)
    assert [(p["amount"], p["rate_pct"], p["commission"]) for p in parts] == [
        (Decimal("1000"), Decimal("4"), Decimal("40.00")), (Decimal("2000"), Decimal("6"), Decimal("120.00"))]
    # Without a target there is no attainment: all at the first tier's rate.
    [only] = scorecard.commission_parts(Decimal(0), Decimal("1000"), None, tiers, accelerator)
    assert only["commission"] == Decimal("20.00")


def test_days_and_periods_of_a_day():
    import datetime as dt

    assert scorecard.day_of_period(dt.date(2026, 11, 20), "2026-11") == 20
    assert scorecard.day_of_period(dt.date(2026, 11, 20), "2026-Q4") == 51
    assert scorecard.period_of(dt.date(2026, 11, 20), "quarter") == "2026-Q4"
