"""Commission statements, rankings, alerts and the general manager's reports (issue 16), in-process on
SQLite and PostgreSQL. Each figure is checked against a recomputation in the test from the raw
amounts (commission cent by cent, one currency unit at a time), not against numbers the code gave."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import select

from crmkit.db import utcnow
from services.orders import alerts, bootstrap
from services.orders.performance_db import Actual, ScheduleRun
from tests.integration import test_performance
from tests.integration.test_orders_flow import _account, _order, organisation
from tests.integration.test_performance import MONTH, QUARTER, _apply_outbox, _target

AMYS = "6d1c8e0a-7a51-4f3a-9e47-2a9c5d8b1f03"
PLANS = {"plans": [
    {"name": "east", "basis": "revenue", "teams": ["east"],
     "tiers": [{"from_pct": "0", "rate_pct": "2"}, {"from_pct": "50", "rate_pct": "4"}],
     "accelerator": {"above_pct": "100", "multiplier": "1.5"}},
    {"name": "default", "basis": "collections", "teams": [], "tiers": [{"from_pct": "0", "rate_pct": "1"}]}]}


@pytest.fixture
def crm(database_url, topic_prefix, monkeypatch):
    test_performance._applied.clear()
    with organisation(database_url, topic_prefix, monkeypatch) as client:
        yield client


def _put(caller, path: str, document: dict):
    current = caller.get(path)
    return caller.put(path, json=document, headers={"If-Match": current.headers["ETag"]})


def _brute_commission(amounts: list[int], target: int, tiers: list[tuple[int, Decimal]],
                      accelerate_above: int, multiplier: Decimal) -> list[Decimal]:
    """Per line, the commission of each currency unit at the rate of the attainment before it."""
    out, earned = [], 0
    for amount in amounts:
        line = Decimal(0)
        for _ in range(amount):
            pct = Decimal(earned) * 100 / target
            rate = [r for start, r in tiers if start <= pct][-1]
            if pct >= accelerate_above:
                rate *= multiplier
            line += rate / 100
            earned += 1
        out.append(line.quantize(Decimal("0.01")))
    return out


def _confirmed(caller, **fields) -> dict:
    order = _order(caller, **fields)
    assert caller.post(f"/orders/{order['id']}/submit").json["status"] == "confirmed"
    return order


def test_a_commission_statement_is_tiered_accelerated_and_traced(crm):
    ann, mia, bob, wes, eve = (crm.people[n] for n in ("ann", "mia", "bob", "wes", "eve"))
    assert _put(mia, "/commission-plans", PLANS).status_code == 403
    assert _put(eve, "/commission-plans", PLANS).status_code == 200
    _target(mia, period=MONTH, value="5000.00")
    orders = [_confirmed(ann), _confirmed(ann)]  # 3000.00 each
    _apply_outbox()
    statement = ann.get("/commission", query_string={"period": MONTH}).json
    assert statement["plan"] == "east" and statement["basis"] == "revenue" and statement["target"] == "5000.00"
    assert [line["order_id"] for line in statement["lines"]] == sorted(
        (o["id"] for o in orders), key=lambda i: next(line["source_id"] for line in statement["lines"]
                                                     if line["order_id"] == i))
    assert {line["order_id"] for line in statement["lines"]} == {o["id"] for o in orders}
    expected = _brute_commission([3000, 3000], 5000, [(0, Decimal(2)), (50, Decimal(4))], 100, Decimal("1.5"))
    assert [Decimal(line["commission"]) for line in statement["lines"]] == expected
    assert Decimal(statement["total"]) == sum(expected) == Decimal("210.00")
    assert statement["attainment"] == "120.0" and statement["basis_total"] == "6000.00"
    # Who reads it: ann, her manager, executives; another team's rep and manager get 404.
    assert mia.get("/commission", query_string={"period": MONTH, "user_id": "ann"}).json["total"] == "210.00"
    assert eve.get("/commission", query_string={"period": MONTH, "user_id": "ann"}).status_code == 200
    for stranger in (bob, wes):
        assert stranger.get("/commission", query_string={"period": MONTH, "user_id": "ann"}).status_code == 404
    # bob (west) is on the default plan: 1% of money collected, none yet.
    other = bob.get("/commission", query_string={"period": MONTH}).json
    assert other["plan"] == "default" and other["basis"] == "collections" and other["total"] == "0.00"


@pytest.mark.parametrize("plans, why", [
    ({"plans": [{**PLANS["plans"][0], "tiers": [{"from_pct": "10", "rate_pct": "2"}]}]}, "tiers start at 0"),
    ({"plans": [{**PLANS["plans"][1]}, {**PLANS["plans"][1], "name": "other"}]}, "at most one plan names no team"),
    ({"plans": [PLANS["plans"][0], {**PLANS["plans"][0], "name": "twice"}]}, "a team is in two plans"),
    ({"plans": [{**PLANS["plans"][0], "tiers": [{"from_pct": "0", "rate_pct": "101"}]}]}, "from 0 to 100"),
    ({"plans": [{**PLANS["plans"][0], "basis": "margin"}]}, "Must be one of"),
])
def test_plans_that_do_not_hold_together_are_422(crm, plans, why):
    r = _put(crm.people["eve"], "/commission-plans", plans)
    assert r.status_code == 422 and why in json.dumps(r.json), r.json


def test_a_ranking_shows_a_rep_only_their_own_row(crm):
    ann, mia, bob, wes = (crm.people[n] for n in ("ann", "mia", "bob", "wes"))
    amy = crm.as_("amy", "rep", teams=["east"])
    _target(mia, period=MONTH, value="6000.00")
    _target(mia, subject_id="amy", period=MONTH, value="2000.00")
    _confirmed(ann)  # 3000 of 6000: 50%
    _account(AMYS, owner="amy", team="east")
    _confirmed(amy, account=AMYS, lines=[{"sku": "LATHE-5X", "qty": 1}])  # 1000 of 2000: 50%
    _apply_outbox()
    ranking = mia.get("/performance/ranking", query_string={"period": MONTH, "team_id": "east"}).json
    # Equal scores (50% x 50 of the default scheme): the larger revenue first.
    assert [(e["user_id"], e["rank"], e["score"]) for e in ranking["items"]] == [("ann", 1, "25.0"), ("amy", 2, "25.0")]
    mine = ann.get("/performance/ranking", query_string={"period": MONTH, "team_id": "east"}).json["items"]
    assert [e["user_id"] for e in mine] == ["ann"]
    assert "amy" not in json.dumps(mine) and "1000.00" not in json.dumps(mine)
    for stranger in (bob, wes):
        assert stranger.get("/performance/ranking", query_string={"period": MONTH, "team_id": "east"}).status_code == 404


def _alerts(kind: str) -> list[dict]:
    outbox = bootstrap.KIT_TABLES["outbox"]
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == kind).order_by(outbox.c.id))
        return [json.loads(r.payload)["data"]["alert"] for r in rows]


def _day(n: int) -> dt.date:
    return dt.date(int(MONTH[:4]), int(MONTH[5:]), n)


def test_a_pace_warning_fires_once_on_its_day_and_a_missed_day_is_caught_up(crm):
    ann, mia, eve = (crm.people[n] for n in ("ann", "mia", "eve"))
    rules = {"rules": [{"name": "pace 20", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 20,
                        "below_pct": "50"}]}
    assert _put(mia, "/alert-rules", rules).status_code == 403
    assert _put(eve, "/alert-rules", rules).status_code == 200
    _target(mia, period=MONTH, value="10000.00")
    _confirmed(ann)  # 30%
    _apply_outbox()
    ctx = bootstrap.context()
    assert alerts.run_schedule(ctx.db, ctx.settings, _day(19)) == [_day(19)]
    assert _alerts("performance.pace_warning") == []
    for _ in range(3):  # the worker restarted on the 20th: the schedule ran three times
        alerts.run_schedule(ctx.db, ctx.settings, _day(20))
    found = _alerts("performance.pace_warning")
    assert len(found) == 1, found
    [warning] = found
    assert (warning["subject_id"], warning["period"], warning["attainment"], warning["day_of_period"]) == \
        ("ann", MONTH, "30.0", 20)
    assert warning["rep_id"] == "ann" and warning["manager_id"] == "mia" and warning["executive_ids"] == ["eve"]
    # A missed day is caught up: the schedule last ran on the 18th and is back on the 22nd.
    rules["rules"].append({**rules["rules"][0], "name": "pace 20 again"})
    assert _put(eve, "/alert-rules", rules).status_code == 200
    with ctx.db.uow() as uow:
        uow.session.get(ScheduleRun, alerts.SCHEDULE).last_day = _day(18)
        uow.commit()
    assert alerts.run_schedule(ctx.db, ctx.settings, _day(22)) == [_day(d) for d in (19, 20, 21, 22)]
    assert [w["rule"] for w in _alerts("performance.pace_warning")] == ["pace 20", "pace 20 again"]


def test_reaching_a_target_fires_once_for_the_rep_and_the_team(crm):
    ann, mia, eve = (crm.people[n] for n in ("ann", "mia", "eve"))
    _target(mia, period=MONTH, value="5000.00")
    mia_team = mia.post("/targets", json={"subject_type": "team", "subject_id": "east", "period": MONTH,
                                          "metric": "revenue", "value": "6000.00"})
    assert mia_team.status_code == 201
    _confirmed(ann)
    _apply_outbox()
    assert _alerts("performance.target_reached") == []  # 3000 of 5000
    _confirmed(ann)
    _apply_outbox()
    reached = _alerts("performance.target_reached")
    assert sorted((a["subject_type"], a["subject_id"], a["attainment"]) for a in reached) == \
        [("team", "east", "100.0"), ("user", "ann", "120.0")]
    assert {a["manager_id"] for a in reached} == {"mia"}
    # Replayed events, a third order and the schedule change nothing: once per subject and period.
    test_performance._applied.clear()
    _apply_outbox()
    _confirmed(ann)
    _apply_outbox()
    ctx = bootstrap.context()
    alerts.run_schedule(ctx.db, ctx.settings, _day(25))
    assert len(_alerts("performance.target_reached")) == 2
    assert eve.get("/performance", query_string={"period": MONTH, "subject_id": "ann"}).json[
        "metrics"]["revenue"]["actual"] == "9000.00"


def test_a_lowered_target_fires_from_the_schedule(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    target = _target(mia, period=MONTH, value="9000.00").json
    _confirmed(ann)
    _apply_outbox()
    assert mia.patch(f"/targets/{target['id']}", json={"value": "3000.00"},
                     headers={"If-Match": '"v1"'}).status_code == 200
    ctx = bootstrap.context()
    alerts.run_schedule(ctx.db, ctx.settings, _day(10))
    assert [(a["subject_id"], a["attainment"]) for a in _alerts("performance.target_reached")] == [("ann", "100.0")]


@pytest.mark.parametrize("rule, why", [
    ({"name": "x", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 30, "below_pct": "50"},
     "does not come in every month"),
    ({"name": "x", "kind": "pace", "metric": "revenue", "period_kind": "month", "below_pct": "50"}, "a day"),
    ({"name": "x", "kind": "target_reached", "metric": "revenue", "period_kind": "month"}, "threshold_pct"),
    ({"name": "x", "kind": "soon", "metric": "revenue", "period_kind": "month"}, "Must be one of"),
])
def test_alert_rules_that_do_not_hold_together_are_422(crm, rule, why):
    r = _put(crm.people["eve"], "/alert-rules", {"rules": [rule]})
    assert r.status_code == 422 and why in json.dumps(r.json), r.json


def test_reports_for_the_general_manager_cover_what_the_caller_may_see(crm):
    ann, mia, wes, eve = (crm.people[n] for n in ("ann", "mia", "wes", "eve"))
    order = _confirmed(ann)
    ann.post(f"/orders/{order['id']}/pay", json={"amount": "1000.00", "paid_on": utcnow().date().isoformat()})
    _apply_outbox()
    year_before = f"{int(MONTH[:4]) - 1}{MONTH[4:]}"
    with bootstrap.context().db.uow() as uow:  # a year earlier, as the ledger summed it then
        uow.session.add(Actual(user_id="ann", team_id="east", metric="revenue", month=year_before,
                               product_category="machines", region="", amount=Decimal("1600.00")))
        uow.commit()
    sales = mia.get("/reports/sales", query_string={"period": MONTH}).json["items"]
    assert {(r["group"], r["revenue"], r["revenue_year_before"], r["change_pct"]) for r in sales} == \
        {("machines", "2000.00", "1600.00", "25.0"), ("parts", "1000.00", "0.00", None)}
    collections = eve.get("/reports/collections", query_string={"period": MONTH}).json["items"]
    assert collections == [{"month": MONTH, "revenue": "3000.00", "collections": "1000.00", "collected_pct": "33.3"}]
    _target(mia, period=MONTH, value="6000.00")
    report = mia.get("/reports/attainment", query_string={"period": QUARTER}).json["items"]
    assert [(t["team_id"], t["actual"]) for t in report] == [("east", "3000.00")]
    assert report[0]["people"][0]["user_id"] == "ann"
    # Another team's manager sees none of it; reps may not use the reports.
    assert wes.get("/reports/sales", query_string={"period": MONTH}).json["items"] == []
    assert wes.get("/reports/attainment", query_string={"period": MONTH, "team_id": "east"}).status_code == 404
    assert ann.get("/reports/sales", query_string={"period": MONTH}).status_code == 403
