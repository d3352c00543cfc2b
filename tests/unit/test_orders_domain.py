"""The orders service's pure rules, the line writer, and the approval chain on a fake unit of work."""
from __future__ import annotations

import datetime as dt
import itertools
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


# ---- approval rules --------------------------------------------------------------------------------------
def _metrics(**values):
    from services.orders.domain import order_metrics

    base = {"lines": [{"qty": 2, "list_price": Decimal("100.00"), "line_total": Decimal("140.00")}],
            "total": Decimal("140.00"), "cost": Decimal("120.00"), "payment_terms_days": 90,
            "delivery_date": dt.date(2026, 12, 5), "today": dt.date(2026, 12, 1)}
    return order_metrics(**{**base, **values})


def test_the_rules_read_the_effective_discount_terms_lead_time_and_margin():
    from services.orders.domain import DEFAULT_POLICY, tripped_rules

    metrics = _metrics()
    assert metrics["discount_pct"] == Decimal("30.00") and metrics["delivery_lead_days"] == 4
    assert metrics["gross_margin_pct"] == Decimal("14.3")
    assert [r["rule"] for r in tripped_rules(DEFAULT_POLICY, metrics)] == [
        "discount-over-10", "discount-over-25", "terms-over-60", "delivery-within-7"]
    margin = {"rules": [{"key": "m", "metric": "gross_margin_pct", "op": "below", "threshold": "20",
                         "chain": ["manager"]}]}
    assert tripped_rules(margin, metrics)[0]["value"] == "14.3"
    # An unknown cost trips a margin rule: a cost nobody entered must not wave a loss through.
    assert tripped_rules(margin, _metrics(cost=None))[0]["value"] is None
    assert tripped_rules(margin, _metrics(cost=Decimal("10.00"))) == []


def test_the_chain_runs_upward_and_limits_send_it_further():
    from services.orders.domain import approval_chain, tripped_rules

    policy = {"rules": [{"key": "d", "metric": "discount_pct", "op": "above", "threshold": "10", "chain": ["manager"]},
                        {"key": "t", "metric": "payment_terms_days", "op": "above", "threshold": "60",
                         "chain": ["executive", "manager"]}],
              "limits": {"manager": {"discount_pct": "20"}}}
    metrics = _metrics()
    assert approval_chain(policy, tripped_rules(policy, metrics), metrics) == ["manager", "parent_manager", "executive"]
    small = _metrics(lines=[{"qty": 1, "list_price": Decimal("100.00"), "line_total": Decimal("85.00")}],
                     payment_terms_days=30)
    assert approval_chain(policy, tripped_rules(policy, small), small) == ["manager"]


def test_payments_fill_the_earliest_instalments_first():
    from services.orders.domain import allocate

    plan = [(dt.date(2027, 1, 15), Decimal("500.00")), (dt.date(2026, 12, 15), Decimal("500.00"))]
    rows = allocate(plan, Decimal("700.00"), dt.date(2027, 2, 1))
    assert [(r["paid"], r["outstanding"], r["overdue"]) for r in rows] == [
        (Decimal("500.00"), Decimal("0.00"), False), (Decimal("200.00"), Decimal("300.00"), True)]


def test_order_numbers_are_a_keyed_permutation_of_the_years_count():
    from services.orders.domain import NUMBER_SPACE, order_number_code

    codes = [order_number_code(i, b"k" * 32) for i in range(20_000)]
    assert len(set(codes)) == len(codes) and all(0 <= c < NUMBER_SPACE for c in codes)
    assert codes[:5] != [order_number_code(i, b"j" * 32) for i in range(5)]  # another year's key, other numbers
    steps = {b - a for a, b in itertools.pairwise(codes)}
    assert len(steps) > 1000  # nothing like a counter


def test_a_plan_falls_due_within_the_terms_from_delivery():
    from services.orders.domain import latest_due_date

    today = dt.date(2026, 12, 1)
    assert latest_due_date(dt.date(2026, 12, 31), 30, today) == dt.date(2027, 1, 30)
    assert latest_due_date(None, 30, today) == dt.date(2026, 12, 31)
    assert latest_due_date(dt.date(2026, 11, 1), 30, today) == dt.date(2026, 12, 31)  # delivered already: from today


def test_the_line_writer_writes_what_the_line_schema_would():
    from types import SimpleNamespace

    from flask import Flask, g

    from crmkit.auth import Principal
    from services.orders.schemas import OrderLineSchema, OrderSchema

    line = SimpleNamespace(sku="A-1", name="Lathe", category=None, qty=3, list_price=Decimal("1000.00"),
                           unit_price=Decimal("950.5"), discount_pct=Decimal("5"), line_total=Decimal("2708.93"),
                           unit_cost=Decimal("600.00"), excluded_from_quota=False)
    app = Flask(__name__)
    for role in ("manager", "rep"):
        with app.test_request_context():
            g.principal = Principal(user_id="u", role=role)
            fast = OrderSchema(only=("lines",)).dump({"lines": [line]})["lines"]
            slow = OrderLineSchema(many=True).dump([line])
            assert fast == slow, role
            assert ("unit_cost" in fast[0]) is (role == "manager")


def test_resolve_chain_skips_who_may_not_decide_and_passes_up():
    from services.orders.approvals import resolve_chain
    from services.orders.db import DirectoryTeam, DirectoryUser
    from tests.unit.fakes import FakeUnitOfWork

    rows = [DirectoryTeam(id="sales", manager_id="pat", parent_team_id=None),
            DirectoryTeam(id="east", manager_id="mia", parent_team_id="sales"),
            DirectoryUser(id="mia", role="manager", active=True), DirectoryUser(id="pat", role="manager", active=True)]
    uow = FakeUnitOfWork(rows)
    assert resolve_chain(uow, ["manager", "executive"], "ann", "east") == [("manager", "mia"), ("executive", None)]
    # The owner's own manager is the requester: the decision goes to the parent team's manager.
    assert resolve_chain(uow, ["manager"], "ann", "east", frozenset({"mia"})) == [("parent_manager", "pat")]
    # A deactivated manager, then nobody above: any executive decides.
    uow.session.get(DirectoryUser, "mia").active = False
    assert resolve_chain(uow, ["manager"], "ann", "east", frozenset({"pat"})) == [("executive", None)]
