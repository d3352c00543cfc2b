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
from crmkit.periods import day_bounds
from services.orders import alerts, bootstrap
from services.orders.performance_db import Actual, ScheduleRun
from tests.integration import test_performance
from tests.integration.test_orders_flow import OTHER_ACCOUNT, _account, _order, organisation
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
    rules["rules"].append({**rules["rules"][0], "name": "pace 20 at 60", "below_pct": "60"})  # a new condition
    assert _put(eve, "/alert-rules", rules).status_code == 200
    with ctx.db.uow() as uow:
        uow.session.get(ScheduleRun, alerts.SCHEDULE).last_day = _day(18)
        uow.commit()
    assert alerts.run_schedule(ctx.db, ctx.settings, _day(22)) == [_day(d) for d in (19, 20, 21, 22)]
    assert [w["rule"] for w in _alerts("performance.pace_warning")] == ["pace 20", "pace 20 at 60"]


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


# ---- what the attack review of this step found -----------------------------------------------------------
def test_a_tiny_target_against_a_large_order_fires_without_breaking_the_consumer(crm):
    """Attainment 30,000,000% once overflowed the firing's column on PostgreSQL and failed the event."""
    ann, mia = crm.people["ann"], crm.people["mia"]
    _target(mia, period=MONTH, value="0.01")
    _confirmed(ann)
    _apply_outbox()
    [reached] = _alerts("performance.target_reached")
    assert reached["subject_id"] == "ann" and Decimal(reached["attainment"]) == Decimal("30000000.0")
    assert ann.get("/performance", query_string={"period": MONTH}).json["metrics"]["revenue"]["actual"] == "3000.00"


def test_commission_keeps_the_plan_of_the_team_it_was_earned_in(crm):
    ann, mia, wes, eve = (crm.people[n] for n in ("ann", "mia", "wes", "eve"))
    assert _put(eve, "/commission-plans", PLANS).status_code == 200
    _target(mia, period=MONTH, value="5000.00")
    _confirmed(ann)
    _confirmed(ann)
    _apply_outbox()
    assert ann.get("/commission", query_string={"period": MONTH}).json["total"] == "210.00"
    crm.directory.put_user("ann", "rep", "west")  # ann moves to west, on the default (collections) plan
    moved = ann.get("/commission", query_string={"period": MONTH}).json
    assert moved["total"] == "210.00" and [p["plan"] for p in moved["plans"]] == ["east"]
    assert moved["plan"] == "default" and moved["basis_total"] == "0.00"  # what she is on now
    # Her new manager sees nothing of what she earned in east: no lines, no total, no tier.
    seen = wes.get("/commission", query_string={"period": MONTH, "user_id": "ann"}).json
    assert seen["lines"] == [] and seen["total"] == "0.00" and seen["plans"] == []


def test_a_cancelled_order_leaves_the_statement_and_payments_pay_on_collections(crm):
    ann, bob, mia, eve = (crm.people[n] for n in ("ann", "bob", "mia", "eve"))
    assert _put(eve, "/commission-plans", PLANS).status_code == 200
    _target(mia, period=MONTH, value="5000.00")
    kept, cancelled = _confirmed(ann), _confirmed(ann)
    assert ann.post(f"/orders/{cancelled['id']}/cancel", json={"reason": "withdrawn"}).status_code == 200
    order = _confirmed(bob, account=OTHER_ACCOUNT)
    assert bob.post(f"/orders/{order['id']}/pay", json={"amount": "1234.00", "paid_on": utcnow().date().isoformat()},
                    headers={"Idempotency-Key": f"pay-{order['id']}"}).status_code == 200
    _apply_outbox()
    statement = ann.get("/commission", query_string={"period": MONTH}).json
    assert [line["order_id"] for line in statement["lines"]] == [kept["id"]]
    assert statement["total"] == str(sum(_brute_commission([3000], 5000, [(0, Decimal(2)), (50, Decimal(4))],
                                                           100, Decimal("1.5"))))
    collected = bob.get("/commission", query_string={"period": MONTH}).json
    assert [(line["source"], line["amount"], line["commission"]) for line in collected["lines"]] == [
        ("payment", "1234.00", "12.34")]


def test_margin_is_not_shown_to_reps_in_performance_rankings_or_contributions(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    _confirmed(ann)
    _apply_outbox()
    assert "gross_margin" not in ann.get("/performance", query_string={"period": MONTH}).json["metrics"]
    [row] = ann.get("/performance/ranking", query_string={"period": MONTH, "team_id": "east"}).json["items"]
    assert "gross_margin" not in row["metrics"]
    entries = ann.get("/performance/contributions", query_string={"period": MONTH, "subject_id": "ann"}).json
    assert {e["metric"] for e in entries["items"]} == {"revenue", "orders"}
    assert mia.get("/performance", query_string={"period": MONTH, "subject_id": "ann"}).json[
        "metrics"]["gross_margin"]["actual"] == "1550.00"


def test_rankings_and_reports_tell_nobody_which_teams_exist(crm):
    ann, mia, kim, sam = (crm.people[n] for n in ("ann", "mia", "kim", "sam"))
    for team in ("sales", "west", "no-such-team"):
        assert ann.get("/performance/ranking", query_string={"period": MONTH, "team_id": team}).status_code == 404
        assert mia.get("/reports/attainment", query_string={"period": MONTH, "team_id": team}).status_code == 404
    for path, args in (("/commission", {"period": MONTH}), ("/performance/ranking", {"period": MONTH, "team_id": "east"}),
                       ("/reports/sales", {"period": MONTH}), ("/alert-rules", {}), ("/commission-plans", {})):
        for outsider in (kim, sam):
            assert outsider.get(path, query_string=args).status_code == 403, (path, outsider)


def test_the_attainment_report_sums_teams_below_and_hides_a_leavers_new_target(crm):
    ann, mia, wes, pat = (crm.people[n] for n in ("ann", "mia", "wes", "pat"))
    assert pat.post("/targets", json={"subject_type": "team", "subject_id": "sales", "period": MONTH,
                                      "metric": "revenue", "value": "6000.00"}).status_code == 201
    _confirmed(ann)
    _apply_outbox()
    report = {t["team_id"]: t for t in pat.get("/reports/attainment", query_string={"period": MONTH}).json["items"]}
    assert (report["sales"]["actual"], report["sales"]["attainment"]) == ("3000.00", "50.0")
    crm.directory.put_user("ann", "rep", "west")
    assert _target(wes, period=MONTH, value="7777.00").status_code == 201
    [east] = mia.get("/reports/attainment", query_string={"period": MONTH, "team_id": "east"}).json["items"]
    [former] = [p for p in east["people"] if p["user_id"] == "ann"]
    assert former["actual"] == "3000.00" and former["target"] is None


def test_a_renamed_rule_fires_nothing_again_and_a_changed_threshold_is_a_new_rule(crm):
    ann, mia, eve = (crm.people[n] for n in ("ann", "mia", "eve"))
    rule = {"name": "reached", "kind": "target_reached", "metric": "revenue", "period_kind": "month",
            "threshold_pct": "100"}
    assert _put(eve, "/alert-rules", {"rules": [rule]}).status_code == 200
    _target(mia, period=MONTH, value="2500.00")
    _confirmed(ann)
    _apply_outbox()
    ctx = bootstrap.context()
    assert len(_alerts("performance.target_reached")) == 1
    assert _put(eve, "/alert-rules", {"rules": [{**rule, "name": "renamed"}]}).status_code == 200
    alerts.run_schedule(ctx.db, ctx.settings, _day(5))
    assert len(_alerts("performance.target_reached")) == 1
    assert _put(eve, "/alert-rules", {"rules": [{**rule, "threshold_pct": "110"}]}).status_code == 200
    alerts.run_schedule(ctx.db, ctx.settings, _day(5))
    assert [a["threshold_pct"] for a in _alerts("performance.target_reached")] == ["100", "110"]


def test_a_pace_day_caught_up_later_is_judged_as_it_stood_that_day(crm):
    """Down on the 20th, back on the 26th: what was sold on the 25th does not hide the warning due on the 20th."""
    from services.orders import actuals

    eve, mia = crm.people["eve"], crm.people["mia"]
    rules = {"rules": [{"name": "pace", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 20,
                        "below_pct": "50"}]}
    assert _put(eve, "/alert-rules", rules).status_code == 200
    _target(mia, period=MONTH, value="10000.00")
    ctx = bootstrap.context()
    alerts.run_schedule(ctx.db, ctx.settings, _day(19))
    envelope = {"id": "late-sale"}
    with ctx.db.uow() as uow:  # the ledger as the consumer writes it: 8,000.00 sold on the 25th
        actuals.add(uow, [actuals._entry(envelope, "revenue", "ann", "east", _day(25), Decimal("8000.00"),
                                         source="order", source_id="late-order", order_id="late-order")])
        uow.commit()
    alerts.run_schedule(ctx.db, ctx.settings, _day(26))
    [warning] = _alerts("performance.pace_warning")
    assert (warning["fired_on"], warning["actual"], warning["attainment"]) == (_day(20).isoformat(), "0.00", "0.0")


@pytest.mark.parametrize("rate", ["NaN", "1E-999999", 2.5, "2.555", "-1"])
def test_plan_percentages_are_decimal_strings_with_two_places(crm, rate):
    plan = {**PLANS["plans"][1], "tiers": [{"from_pct": "0", "rate_pct": rate}]}
    r = _put(crm.people["eve"], "/commission-plans", {"plans": [plan]})
    assert r.status_code == 422, r.json


def test_one_batch_holding_an_orders_whole_story_counts_what_stands_at_its_end(crm):
    """A consumer batch is one transaction: an order confirmed twice counts once, one confirmed and
    cancelled counts nothing, however the events fall in one batch or across two."""
    from crmkit.events import encode, parse_envelope
    from services.orders import actuals
    from tests.integration.test_orders_flow import _events

    ann = crm.people["ann"]
    kept, dropped = _confirmed(ann), _confirmed(ann)
    assert ann.post(f"/orders/{dropped['id']}/cancel", json={"reason": "withdrawn"}).status_code == 200
    ctx = bootstrap.context()
    table = actuals.handlers(ctx.settings)[0]
    story = sorted(_events("order.confirmed") + _events("order.cancelled"), key=lambda e: e["time"])
    story = [parse_envelope(encode(e)) for e in story]
    confirmed_kept = next(e for e in story if e["subject"] == kept["id"])
    one_batch = [*story, {**confirmed_kept, "id": "again"}]  # and the kept one re-confirmed in the batch
    with ctx.db.uow() as uow:
        actuals.prepare_orders(uow, one_batch)
        for envelope in one_batch:
            table[(envelope["type"], 1)](uow, envelope)
        uow.commit()
    figures = ann.get("/performance", query_string={"period": MONTH}).json["metrics"]
    assert figures["revenue"]["actual"] == "3000.00" and figures["orders"]["actual"] == "1.00"
    # The next batch re-confirms it again: what was written is replaced, not added to.
    with ctx.db.uow() as uow:
        actuals.prepare_orders(uow, [confirmed_kept])
        table[("order.confirmed", 1)](uow, {**confirmed_kept, "id": "and-again"})
        uow.commit()
    assert ann.get("/performance", query_string={"period": MONTH}).json["metrics"]["revenue"]["actual"] == "3000.00"
    # The totals the alert checks read agree with the sums, by person and by team.
    from sqlalchemy import func

    from services.orders.performance_db import ActualTotal
    with ctx.db.uow(readonly=True) as uow:
        for kind, column in (("user", Actual.user_id), ("team", Actual.team_id)):
            sums = {tuple(r[:3]): r[3] for r in uow.session.execute(select(
                column, Actual.metric, Actual.month, func.sum(Actual.amount)).group_by(column, Actual.metric, Actual.month))}
            totals = {tuple(r[:3]): r[3] for r in uow.session.execute(select(
                ActualTotal.subject_id, ActualTotal.metric, ActualTotal.month, ActualTotal.amount).where(
                ActualTotal.kind == kind))}
            assert sums and sums == totals, kind


def test_each_day_ended_publishes_every_subjects_attainment_once(crm):
    """performance.attainment (issue 18's weekly progress): the day just ended, each target of a rep and
    a team, as it stood at that day's end; once a day, days missed caught up."""
    from services.orders import attainment, scorecard

    mia = crm.people["mia"]
    _target(mia, period=MONTH, value="10000.00")
    assert mia.post("/targets", json={"subject_type": "team", "subject_id": "east", "period": MONTH,
                                      "metric": "revenue", "value": "20000.00"}).status_code == 201
    _confirmed(crm.people["ann"])  # 3000 today
    _apply_outbox()
    ctx, today = bootstrap.context(), scorecard.local_day(utcnow())

    def published() -> list[dict]:
        outbox = bootstrap.KIT_TABLES["outbox"]
        with ctx.db.engine.connect() as conn:
            rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == "performance.attainment"))
            return [json.loads(r.payload)["data"]["attainment"] for r in rows]

    def run(day: dt.date, after_midnight=dt.timedelta(hours=2)) -> list[dt.date]:
        return attainment.run_snapshots(ctx.db, ctx.settings, day_bounds(day)[0] + after_midnight)

    assert run(today) == [today - dt.timedelta(days=1)]
    before = {(a["subject_id"], a["period"]): a["actual"] for a in published()}
    assert set(before.values()) == {"0.00"}  # yesterday: nothing sold yet
    assert run(today + dt.timedelta(days=1), dt.timedelta(minutes=30)) == []  # within the grace: not yet
    assert run(today + dt.timedelta(days=1)) == [today]
    assert run(today + dt.timedelta(days=1)) == []  # once a day
    of_today = {(a["subject_type"], a["subject_id"], a["period"]): (a["target"], a["actual"], a["attainment"])
                for a in published() if a["day"] == today.isoformat()}
    quarter, year = scorecard.period_of(today, "quarter"), str(today.year)
    assert of_today == {  # a month's target is also its quarter's and year's share
        ("user", "ann", p): ("10000.00", "3000.00", "30.0") for p in (MONTH, quarter, year)} | {
        ("team", "east", p): ("20000.00", "3000.00", "15.0") for p in (MONTH, quarter, year)}
    # Down for three days: each is published when it is back.
    assert run(today + dt.timedelta(days=4)) == [today + dt.timedelta(days=n) for n in (1, 2, 3)]
    # A person's figure comes split by the team it was earned in.
    [anns] = [a for a in published() if a["subject_id"] == "ann" and a["day"] == today.isoformat()
              and a["period"] == MONTH]
    assert anns["by_team"] == [{"team_id": "east", "actual": "3000.00"}]
