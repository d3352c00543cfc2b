"""The rep's day through the edge (issue 18), on the shared PostgreSQL stack: visit plans checked in,
rescheduled and missed at the end of the day (across a worker restart); weekly progress for a team
of four reps over two weeks and the daily report, each against a recomputation from the raw records
(the services' own databases and the events on Kafka); and what another team's rep is refused.

The schedules' clock (crmkit.clock) is the test's: set back to plan days that are past by the wall
clock, and forward to end a day. Records keep the wall clock's times."""
from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

from crmkit.db import utcnow
from crmkit.periods import day_bounds, local_day
from tests.e2e.gateway_stack import PASSWORD, wait_replicated
from tests.e2e.helpers import envelopes
from tests.e2e.notifications_story import _set_clock
from tests.infra import read_topic, wait_for

STAGE_EVENTS = ("opportunity.stage_changed", "opportunity.won", "opportunity.lost")
DEAL_EVENTS = ("opportunity.created", "opportunity.updated", "opportunity.deleted", *STAGE_EVENTS)
ZERO = Decimal("0.00")


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def _at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return day_bounds(day)[0] + dt.timedelta(hours=hour, minutes=minute)


def _ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


def _account(crm, session, name: str) -> dict:
    return _ok(session.post(crm.api("/accounts"), json={"name": f"{name} {_uid()}", "region": "华东"}), 201)


def _plan(crm, session, account_id: str, at: dt.datetime, **extra) -> dict:
    return _ok(session.post(crm.api("/visits"), json={"account_id": account_id, "planned_at": at.isoformat(),
                                                      **extra}), 201)


def _all(crm, session, path: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = _ok(session.get(crm.api(path), params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})}))
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _events(crm) -> list[dict]:
    return envelopes(read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.opportunities.v1"))


def _agree(pair, what: str, timeout: float = 60) -> None:
    """Until pair() gives two equal things (events still arriving); then, or at the timeout, assert it."""
    try:
        wait_for(lambda: (lambda a, b: a == b)(*pair()), timeout=timeout, interval=1.0, what=what)
    except AssertionError:
        pass
    got, expected = pair()
    assert got == expected, what


def _when(envelope: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(envelope["time"].replace("Z", "+00:00"))


# ---- visits: planned, checked in, rescheduled, missed once ---------------------------------------------
def plan_check_in_reschedule_and_miss(crm) -> None:
    ann, mgr, bo = crm.as_("ann"), crm.as_("mgr-east"), crm.as_("bo")
    wall = utcnow()
    today = local_day(wall)
    _set_clock(crm, wall - dt.timedelta(days=1))  # "tomorrow" is the wall clock's today
    try:
        accounts = [_account(crm, ann, f"Visited {i}") for i in range(3)]
        planned = [_plan(crm, ann, accounts[i % 3]["id"], _at(today, 8 + i), purpose=f"visit {i}") for i in range(5)]
        seen = _all(crm, mgr, "/visits", date=today.isoformat(), owner_id=crm.users["ann"]["id"])
        assert {v["id"] for v in planned} <= {v["id"] for v in seen}
        for v in planned:
            assert bo.get(crm.api(f"/visits/{v['id']}")).status_code == 404
            assert bo.post(crm.api(f"/visits/{v['id']}/check-in"), json={"outcome": "x"}).status_code == 404
        assert not {v["id"] for v in planned} & {v["id"] for v in _all(crm, bo, "/visits")}
        assert bo.post(crm.api("/visits"), json={"account_id": accounts[0]["id"], "planned_at": _at(today, 9)
                                                 .isoformat()}).status_code == 404

        next_contact = (wall + dt.timedelta(days=3)).replace(microsecond=0)
        for i, v in enumerate(planned[:3]):
            done = _ok(ann.post(crm.api(f"/visits/{v['id']}/check-in"), json={
                "outcome": f"outcome {i}", "latitude": 31.23, "longitude": 121.47, "address": "上海市浦东新区",
                "next_contact_at": next_contact.isoformat()}))
            assert done["status"] == "done" and done["activity_id"]
            logged = _ok(ann.get(crm.api(f"/accounts/{v['account_id']}/activities")))["items"]
            [activity] = [a for a in logged if a["id"] == done["activity_id"]]
            assert activity["summary"] == f"outcome {i}" and activity["kind"] == "visit"
            assert dt.datetime.fromisoformat(activity["next_contact_at"].replace("Z", "+00:00")) == next_contact
        moved = _ok(ann.post(crm.api(f"/visits/{planned[3]['id']}/reschedule"), json={
            "planned_at": _at(today + dt.timedelta(days=1), 10).isoformat(), "reason": "the buyer is away"}))
        assert moved["status"] == "rescheduled" and moved["rescheduled_to"]
        left = planned[4]["id"]

        # The day ends while the worker is down; it marks the visit missed when it is back, once.
        crm.stop("opportunities-worker")
        _set_clock(crm, wall + dt.timedelta(days=1))
        crm.start("opportunities-worker")
        wait_for(lambda: ann.get(crm.api(f"/visits/{left}")).json()["status"] == "missed", timeout=60,
                 what="the visit left planned marked missed at the end of its day")
        crm.stop("opportunities-worker")
        crm.start("opportunities-worker")
        wait_for(lambda: crm.sql("opportunities", "select count(*) from outbox where published_at is null")[0][0] == 0,
                 what="the outbox relayed")
        missed = [e for e in _events(crm) if e["type"] == "visit.missed" and e["subject"] == left]
        assert len(missed) == 1 and missed[0]["data"]["automatic"] is True
        assert ann.get(crm.api(f"/visits/{moved['rescheduled_to']}")).json()["status"] == "planned"
    finally:
        _set_clock(crm, None)


# ---- weekly progress: four reps, two weeks, against the raw records ---------------------------------------
def _rep(crm, name: str) -> str:
    admin = crm.as_("admin")
    user = _ok(admin.post(crm.api("/users"), json={"username": name, "password": PASSWORD, "name": name.title(),
                                                    "role": "rep", "team_id": crm.teams["east"]["id"]}), 201)
    crm.users[name] = user
    return name


def four_reps_over_two_weeks(crm) -> None:
    reps = ["ann", "amy", _rep(crm, f"vic-{_uid()}"), _rep(crm, f"wu-{_uid()}")]
    wait_replicated(crm, *(crm.users[r]["id"] for r in reps), service="opportunities")
    wall = utcnow()
    today = local_day(wall)
    first = today - dt.timedelta(days=8)
    _set_clock(crm, _at(first, 0, 30))
    try:
        for n, rep in enumerate(reps):
            session = crm.as_(rep)
            account = _account(crm, session, f"Weekly {rep}")
            for d in range(9):
                day = first + dt.timedelta(days=d)
                for k in range((n + d) % 3):
                    visit = _plan(crm, session, account["id"], _at(day, 9 + 2 * k), purpose=f"{rep} {d} {k}")
                    planned_at = dt.datetime.fromisoformat(visit["planned_at"].replace("Z", "+00:00"))
                    if planned_at > wall:
                        continue  # later today: the end of the day misses it
                    fate = (n + d + k) % 4
                    if fate in (0, 1):
                        _ok(session.post(crm.api(f"/visits/{visit['id']}/check-in"), json={
                            "outcome": "done", "at": planned_at.isoformat()}))
                    elif fate == 2:
                        _ok(session.post(crm.api(f"/visits/{visit['id']}/miss"), json={"reason": "stuck in traffic"}))
            # A deal opened, moved on and (for some) won after the visits: progress the visits led to.
            deal = _ok(session.post(crm.api("/opportunities"), json={
                "account_id": account["id"], "name": f"Weekly deal {rep}", "amount": f"{(n + 1) * 1000}.00",
                "expected_close_date": (today + dt.timedelta(days=40)).isoformat()}), 201)
            for key in ("budget_confirmed", "decision_maker_identified"):
                _ok(session.post(crm.api(f"/opportunities/{deal['id']}/checklist/{key}"), json={"done": True}))
            etag = session.get(crm.api(f"/opportunities/{deal['id']}")).headers["ETag"]
            _ok(session.post(crm.api(f"/opportunities/{deal['id']}/stage"), json={"stage": "needs_analysis"},
                             headers={"If-Match": etag}))
            if n % 2:
                etag = session.get(crm.api(f"/opportunities/{deal['id']}")).headers["ETag"]
                _ok(session.post(crm.api(f"/opportunities/{deal['id']}/lose"), json={"reason": "budget cut"},
                                 headers={"If-Match": etag}))
            _ok(session.post(crm.api("/leads"), json={"company": f"Weekly lead {rep} {_uid()}", "contact_name": "Qian",
                                                       "email": f"q.{_uid()}@example.com"}), 201)
        _set_clock(crm, wall + dt.timedelta(days=1))
        wait_for(lambda: crm.sql("opportunities", "select count(*) from visits where status = 'planned' and day <= %s",
                                 today)[0][0] == 0, timeout=60, what="the days that are over swept")
    finally:
        _set_clock(crm, None)
    mgr = crm.as_("mgr-east")
    manages = _ok(mgr.get(crm.api("/me")))
    week = f"{today.isocalendar()[0]}-W{today.isocalendar()[1]:02d}"

    def reported(group_by):
        body = _ok(mgr.get(crm.api("/reports/weekly-progress"), params={"week": week, "group_by": group_by}))
        return {g["key"]: g["weeks"] for g in body["groups"]}

    for group_by in ("owner", "team"):
        _agree(lambda g=group_by: (reported(g), _weekly_from_raw(crm, manages, today, g)),
               f"weekly progress by {group_by} equal to the raw records'")
    by_owner = reported("owner")
    assert {crm.users[r]["id"] for r in reps} <= set(by_owner)
    assert sum(w["visits_done"] for r in reps for w in by_owner[crm.users[r]["id"]]) > 0
    assert sum(w["visits_missed"] for r in reps for w in by_owner[crm.users[r]["id"]]) > 0
    # Another team's rep sees his own figures, never the east team's.
    bo_groups = _ok(crm.as_("bo").get(crm.api("/reports/weekly-progress"), params={"week": week}))["groups"]
    assert {g["key"] for g in bo_groups} <= {crm.users["bo"]["id"]}


def _weekly_from_raw(crm, me: dict, today: dt.date, group_by: str) -> dict:
    """Weekly progress the slow way: visits and deals from the opportunities database, the pipeline
    replayed from the deals' events on Kafka, leads from the leads database, orders and payments
    from the orders database. In scope: what the manager owns, and his teams'."""
    manages = set(me.get("manages") or [])

    def in_scope(owner, team) -> bool:
        return owner == me["id"] or team in manages

    def key(owner, team):
        return owner if group_by == "owner" else team

    this_monday = today - dt.timedelta(days=today.weekday())
    mondays = [this_monday - dt.timedelta(days=7), this_monday]
    visits = crm.sql("opportunities", "select owner_id, team_id, day, status, account_id, checked_in_at from visits")
    deals = crm.sql("opportunities", "select owner_id, team_id, created_at, amount from opportunities "
                                     "where deleted_at is null")
    leads = crm.sql("leads", "select owner_id, team_id, created_at from leads where deleted_at is null")
    orders = crm.sql("orders", "select coalesce(o.credited_to, o.owner_id), o.team_id, o.account_id, o.total, "
                               "min(h.at) from orders o join order_history h on h.order_id = o.id and "
                               "h.action = 'confirmed' where o.status <> 'cancelled' group by o.id")
    payments = crm.sql("orders", "select coalesce(o.credited_to, o.owner_id), o.team_id, p.paid_on, p.amount "
                                 "from payments p join orders o on o.id = p.order_id")
    history = [e for e in _events(crm) if e["type"] in DEAL_EVENTS]  # those carrying the whole deal
    moves = [(_when(e), e["data"]["opportunity"]) for e in history if e["type"] in STAGE_EVENTS]

    def pipeline(at: dt.datetime) -> dict:
        last: dict = {}
        for e in history:
            if _when(e) < at:
                last[e["subject"]] = e
        out: dict = defaultdict(Decimal)
        for e in last.values():
            o = e["data"]["opportunity"]
            if e["type"] != "opportunity.deleted" and o["status"] == "open" and in_scope(o["owner_id"], o["team_id"]):
                out[key(o["owner_id"], o["team_id"])] += Decimal(o["amount"])
        return out

    figures: dict = defaultdict(lambda: dict.fromkeys(mondays))
    for monday in mondays:
        sunday = monday + dt.timedelta(days=6)
        start, end = day_bounds(monday, sunday)
        week: dict = defaultdict(lambda: {"visits_planned": 0, "visits_done": 0, "visits_missed": 0, "new_leads": 0,
                                          "new_opportunities": [0, ZERO], "pipeline_change": ZERO, "orders": [0, ZERO],
                                          "collected": ZERO, "effective": [0, 0]})
        for owner, team, day, status, account_id, checked_in in visits:
            if in_scope(owner, team) and monday <= day <= sunday:
                w = week[key(owner, team)]
                w["visits_planned"] += status != "rescheduled"
                w["visits_done"] += status == "done"
                w["visits_missed"] += status == "missed"
                if status == "done" and account_id is not None:
                    # What followed: the rep's own moves and orders on the account, of the visit's team.
                    window = (checked_in, checked_in + dt.timedelta(days=14))
                    followed = any(window[0] < t <= window[1] and str(o["account_id"]) == str(account_id)
                                   and o["owner_id"] == owner and o["team_id"] == team for t, o in moves) or any(
                        window[0] < at <= window[1] and str(acc) == str(account_id) and who == owner
                        and t == team for who, t, acc, _total, at in orders)
                    w["effective"][0] += 1
                    w["effective"][1] += followed
        for owner, team, created_at, amount in deals:
            if in_scope(owner, team) and start <= created_at < end:
                week[key(owner, team)]["new_opportunities"][0] += 1
                week[key(owner, team)]["new_opportunities"][1] += amount
        for owner, team, created_at in leads:
            if in_scope(owner, team) and start <= created_at < end:
                week[key(owner, team)]["new_leads"] += 1
        for who, team, _account_id, total, at in orders:
            if in_scope(who, team) and start <= at < end:
                week[key(who, team)]["orders"][0] += 1
                week[key(who, team)]["orders"][1] += total
        for who, team, paid_on, amount in payments:
            if in_scope(who, team) and monday <= paid_on <= sunday:
                week[key(who, team)]["collected"] += amount
        before, after = pipeline(start), pipeline(end)
        for k in set(before) | set(after):
            if after.get(k, ZERO) != before.get(k, ZERO):
                week[k]["pipeline_change"] = after.get(k, ZERO) - before.get(k, ZERO)
        for k, w in week.items():
            done, effective = w.pop("effective")
            figures[k][monday] = {
                "week": f"{monday.isocalendar()[0]}-W{monday.isocalendar()[1]:02d}", **w,
                "new_opportunities": {"count": w["new_opportunities"][0], "amount": _money(w["new_opportunities"][1])},
                "pipeline_change": _money(w["pipeline_change"]),
                "orders": {"count": w["orders"][0], "amount": _money(w["orders"][1])}, "collected": _money(w["collected"]),
                "visits_effective": effective, "visit_effectiveness": round(effective / done, 4) if done else None,
                "attainment": []}  # no targets on this stack (attainment: test_visits and test_commission_alerts)
    blank = {"visits_planned": 0, "visits_done": 0, "visits_missed": 0, "new_leads": 0,
             "new_opportunities": {"count": 0, "amount": "0.00"}, "pipeline_change": "0.00",
             "orders": {"count": 0, "amount": "0.00"}, "collected": "0.00", "visits_effective": 0,
             "visit_effectiveness": None, "attainment": []}
    return {k: [f[m] or {"week": f"{m.isocalendar()[0]}-W{m.isocalendar()[1]:02d}", **blank} for m in mondays]
            for k, f in figures.items()
            if any(f[m] and {x: y for x, y in f[m].items() if x != "week"} != blank for m in mondays)}


def _money(value) -> str:
    return str(Decimal(value).quantize(Decimal("0.01")))


# ---- the daily report against the raw records ---------------------------------------------------------
def _orders_know(crm, *names: str) -> None:
    for name in names:
        wait_for(lambda name=name: crm.as_(name).get(crm.api("/order-types")).status_code != 401, timeout=60,
                 what=f"{name} known to the orders service")


def _confirmed_and_paid_order(crm, account_id: str) -> dict:
    """A deal won on the account becomes an order; submitted (approved if it must be), confirmed, and
    part paid today."""
    ann, admin = crm.as_("ann"), crm.as_("admin")
    product = _ok(admin.post(crm.api("/products"), json={"sku": f"DR-{_uid()}", "name": "Pump", "category": "pumps",
                                                          "list_price": "8000.00", "unit_cost": "5000.00"}), 201)
    deal = _ok(ann.post(crm.api("/opportunities"), json={
        "account_id": account_id, "name": f"Pumps {_uid()}", "amount": "16000.00",
        "expected_close_date": (dt.date.today() + dt.timedelta(days=20)).isoformat(),
        "products": [{"sku": product["sku"], "qty": 2, "unit_price": "8000.00"}]}), 201)
    _ok(ann.post(crm.api(f"/opportunities/{deal['id']}/win"), json={}))

    def draft():
        items = ann.get(crm.api("/orders"), params={"opportunity_id": deal["id"]}).json()["items"]
        return items[0] if items else None
    order = wait_for(draft, timeout=30, what="the won deal's order")
    current = ann.get(crm.api(f"/orders/{order['id']}"))
    _ok(ann.patch(crm.api(f"/orders/{order['id']}"), json={
        "delivery_date": (dt.date.today() + dt.timedelta(days=14)).isoformat()}, headers={"If-Match": current.headers["ETag"]}))
    status = _ok(ann.post(crm.api(f"/orders/{order['id']}/submit")))["status"]
    deciders = {crm.users["mgr-east"]["id"]: crm.as_("mgr-east"), None: crm.as_("exec")}
    while status == "pending_approval":
        [pending] = ann.get(crm.api("/approvals"), params={"order_id": order["id"], "status": "pending"}).json()["items"]
        decider = deciders.get(pending.get("current_approver_id"), deciders[None])
        status = _ok(decider.post(crm.api(f"/approvals/{pending['id']}/decision"), json={"decision": "approve"}))["status"]
        status = ann.get(crm.api(f"/orders/{order['id']}")).json()["status"]
    assert status == "confirmed", status
    _ok(ann.post(crm.api(f"/orders/{order['id']}/pay"), json={"amount": "6000.00",
                                                              "paid_on": local_day(utcnow()).isoformat()}))
    return order


def _draft_from_raw(crm, owner: str, day: dt.date) -> dict:
    start, end = day_bounds(day)
    status = dict(crm.sql("opportunities", "select status, count(*) from visits where owner_id = %s and day = %s "
                                           "group by status", owner, day))
    items = crm.sql("opportunities", "select count(*) from visits where owner_id = %s and day = %s", owner, day)[0][0]
    kinds: dict = defaultdict(int)
    # Activities on the rep's own or their team's records (another team's are not the manager's to count).
    for kind, count in [*crm.sql("opportunities", "select a.kind, count(*) from activities a "
                                                  "join directory_users u on u.id = a.created_by "
                                                  "join accounts acc on acc.id = a.account_id "
                                                  "left join opportunities o on o.id = a.opportunity_id "
                                                  "where a.created_by = %s and a.occurred_at >= %s and a.occurred_at < %s "
                                                  "and case when a.opportunity_id is null then "
                                                  "acc.owner_id = a.created_by or acc.team_id = u.team_id "
                                                  "else o.owner_id = a.created_by or o.team_id = u.team_id end "
                                                  "group by a.kind", owner, start, end),
                        *crm.sql("leads", "select a.kind, count(*) from lead_activities a "
                                          "join directory_users u on u.id = a.created_by join leads l on l.id = a.lead_id "
                                          "where a.created_by = %s and a.occurred_at >= %s and a.occurred_at < %s and "
                                          "(l.owner_id = a.created_by or l.team_id = u.team_id) group by a.kind",
                                 owner, start, end)]:
        kinds[kind] += count
    sources = dict(crm.sql("leads", "select source, count(*) from leads where owner_id = %s and deleted_at is null "
                                    "and created_at >= %s and created_at < %s group by source", owner, start, end))
    [(deals, amount)] = crm.sql("opportunities", "select count(*), coalesce(sum(amount), 0) from opportunities where "
                                                 "owner_id = %s and deleted_at is null and created_at >= %s and "
                                                 "created_at < %s", owner, start, end)
    moves = [(str(o["id"]), e["data"].get("from") or o["stage"], e["data"].get("to") or o["status"])
             for e in sorted(_events(crm), key=_when) if e["type"] in STAGE_EVENTS
             for o in [e["data"]["opportunity"]] if o["owner_id"] == owner and start <= _when(e) < end]
    orders = crm.sql("orders", "select o.total from orders o join order_history h on h.order_id = o.id and "
                               "h.action = 'confirmed' where coalesce(o.credited_to, o.owner_id) = %s and "
                               "o.status <> 'cancelled' group by o.id having min(h.at) >= %s and min(h.at) < %s",
                     owner, start, end)
    [(collected,)] = crm.sql("orders", "select coalesce(sum(p.amount), 0) from payments p join orders o on "
                                       "o.id = p.order_id where coalesce(o.credited_to, o.owner_id) = %s and "
                                       "p.paid_on = %s", owner, day)
    return {"visits": {"planned": status.get("planned", 0) + status.get("done", 0) + status.get("missed", 0),
                       "done": status.get("done", 0), "missed": status.get("missed", 0),
                       "rescheduled": status.get("rescheduled", 0), "items": items},
            "activities": dict(kinds), "calls": kinds.get("call", 0), "new_leads": sum(sources.values()),
            "new_leads_by_source": sources, "opportunities_created": {"count": deals, "amount": _money(amount)},
            "stage_moves": moves, "orders_confirmed": {"count": len(orders), "amount": _money(sum(
                (t for (t,) in orders), ZERO))}, "collected": _money(collected)}


def _comparable(summary: dict) -> dict:
    return {**summary, "visits": {**summary["visits"], "items": len(summary["visits"]["items"])},
            "stage_moves": [(m["opportunity_id"], m["from"], m["to"]) for m in summary["stage_moves"]]}


def daily_report_submitted_and_reviewed(crm) -> None:
    ann, mgr, bo, boss = crm.as_("ann"), crm.as_("mgr-east"), crm.as_("bo"), crm.as_("exec")
    _orders_know(crm, "ann", "mgr-east", "exec", "admin")
    owner, today = crm.users["ann"]["id"], local_day(utcnow())
    account = _account(crm, ann, "Reported")
    lead = _ok(ann.post(crm.api("/leads"), json={"company": f"Reported lead {_uid()}", "contact_name": "Sun",
                                                  "email": f"sun.{_uid()}@example.com", "source": "event"}), 201)
    _ok(ann.post(crm.api(f"/leads/{lead['id']}/activities"), json={"kind": "call", "summary": "first call"}), 201)
    _confirmed_and_paid_order(crm, account["id"])

    def report() -> dict:
        mine = _all(crm, ann, "/daily-reports", date=today.isoformat())
        assert [r["owner_id"] for r in mine] == [owner]
        return mine[0]

    _agree(lambda: (_comparable(report()["summary"]), _draft_from_raw(crm, owner, today)),
           "the draft equal to the day's raw records (the lead and order arriving)")
    draft = report()
    assert draft["status"] == "draft" and draft["summary"]["orders_confirmed"]["count"] >= 1
    assert draft["summary"]["new_leads_by_source"].get("event", 0) >= 1 and draft["summary"]["calls"] >= 1
    assert draft["summary"]["collected"] != "0.00"
    # Another team's rep and manager get 404 on it; the team's manager reads it.
    for other in (bo, crm.as_("mgr-west")):
        assert other.get(crm.api(f"/daily-reports/{draft['id']}")).status_code == 404
        assert draft["id"] not in {r["id"] for r in _all(crm, other, "/daily-reports", date=today.isoformat())}
    assert draft["id"] in {r["id"] for r in _all(crm, mgr, "/daily-reports", date=today.isoformat())}

    # A market note on an account of Bo's that Ann helps on (its virtual team): her manager does not see it.
    bos = _account(crm, bo, "West Secret")
    _ok(bo.put(crm.api(f"/accounts/{bos['id']}/team"), json={"members": [{"user_id": owner, "role": "sales"}]}))
    etag = ann.get(crm.api(f"/daily-reports/{draft['id']}")).headers["ETag"]
    r = ann.patch(crm.api(f"/daily-reports/{draft['id']}"), json={"notes": "a good day", "market": [
        {"competitor": f"Rival-{_uid()}", "product_category": "pumps", "account_id": bos["id"], "note": "cheaper by 8%"},
        {"competitor": "Grundfos", "product_category": "pumps", "account_id": account["id"], "price_heard": "7400",
         "note": "quoted to the buyer"}]}, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    submitted = _ok(ann.post(crm.api(f"/daily-reports/{draft['id']}/submit")))
    assert submitted["status"] == "submitted"
    r = ann.patch(crm.api(f"/daily-reports/{draft['id']}"), json={"notes": "edited"},
                  headers={"If-Match": ann.get(crm.api(f"/daily-reports/{draft['id']}")).headers["ETag"]})
    assert r.status_code == 409 and r.headers["Content-Type"] == "application/problem+json"
    assert ann.post(crm.api(f"/daily-reports/{draft['id']}/review"), json={"comment": "me"}).status_code == 403
    reviewed = _ok(mgr.post(crm.api(f"/daily-reports/{draft['id']}/review"), json={"comment": "follow up Grundfos"}))
    assert reviewed["status"] == "reviewed" and [c["body"] for c in reviewed["comments"]] == ["follow up Grundfos"]
    seen_by_manager = [n for n in _all(crm, mgr, "/market-notes", product_category="pumps") if n["report_id"] == draft["id"]]
    assert sorted(((n["account_id"], n["region"]) for n in seen_by_manager), key=str) == sorted(
        [(None, None), (account["id"], "华东")], key=str)
    seen_by_exec = [n for n in _all(crm, boss, "/market-notes", product_category="pumps") if n["report_id"] == draft["id"]]
    assert bos["id"] in {n["account_id"] for n in seen_by_exec}
    assert not [n for n in _all(crm, bo, "/market-notes") if n["report_id"] == draft["id"]]
    # The manager is told the report is in, the rep that it was reviewed.
    wait_for(lambda: [n for n in mgr.get(crm.api("/notifications")).json()["items"]
                      if n["type"] == "daily_report_submitted" and n["link"] == f"/daily-reports/{draft['id']}"],
             timeout=60, what="the manager told the report is in")
    wait_for(lambda: [n for n in ann.get(crm.api("/notifications")).json()["items"]
                      if n["type"] == "daily_report_reviewed" and "follow up Grundfos" in n["body"]],
             timeout=60, what="the rep told of the review")
