"""Issue 16's month, worked end to end through the edge with every process real and a clock the test
controls (crmkit.clock: the schedules read the file the stack's CRM_CLOCK_FILE names, so the worker
believes it is the 15th, then the 20th, without anyone sleeping for days).

amy (a rep of team east) gets a quarter's targets spread by a distribution; sells counted and
uncounted orders (a sample, a house account, an excluded product); is paid; logs visits and calls in
the other two services. At each step her figures, KPI score and commission, as she, her manager and
an executive read them, equal a recomputation here from the raw records the API returns (orders,
lines, payments, accounts, activities), never from the service's own sums. On day 20, behind pace,
one pace_warning, however often the schedule runs and even across a worker restart; at 100% one
target_reached; replayed events change nothing. Another team's rep, and marketing, see none of it."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from tests.e2e.helpers import produce
from tests.infra import read_topic, wait_for

ZONE = ZoneInfo("Asia/Shanghai")  # the stack's CRM_TIME_ZONE (the default)
HUNDRED = Decimal(100)
COUNTED = ("call", "visit", "meeting", "demo")
SCHEME = {"metrics": [{"metric": "revenue", "weight": 50, "cap_pct": 120},
                      {"metric": "new_accounts", "weight": 20, "cap_pct": 120},
                      {"metric": "activities", "weight": 15, "cap_pct": 120},
                      {"metric": "collections", "weight": 15, "cap_pct": 120}]}
TIERS = [(Decimal(0), Decimal(2)), (Decimal(50), Decimal(4))]
ACCELERATE_ABOVE, MULTIPLIER = Decimal(100), Decimal("1.5")


def _put(session, crm, path: str, document: dict) -> None:
    current = session.get(crm.api(path))
    r = session.put(crm.api(path), json=document, headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text


class Month:
    """The current month in the deployment's zone, its quarter, and the clock file."""

    def __init__(self, crm):
        today = dt.datetime.now(ZONE).date()
        self.year, self.month = today.year, today.month
        self.label = f"{today.year}-{today.month:02d}"
        q = (today.month - 1) // 3 + 1
        self.quarter = f"{today.year}-Q{q}"
        self.months = [f"{today.year}-{m:02d}" for m in range(3 * q - 2, 3 * q + 1)]
        self.clock = crm.state_dir / "clock"
        self.crm = crm

    def set_day(self, day: int) -> None:
        """The worker's schedule believes it is noon on `day` of this month, from the next run on:
        wait for a run to commit after the clock was written, then for one more, which began after
        that (the loop is sequential), so it read the new day."""
        self.clock.write_text(dt.datetime(self.year, self.month, day, 12, tzinfo=ZONE).isoformat())
        for _ in range(2):
            before = self._ran_at()
            wait_for(lambda before=before: self._ran_at() is not None and (before is None or self._ran_at() > before),
                     timeout=30, what=f"the alert schedule run on day {day}")

    def _ran_at(self):
        rows = self.crm.sql("orders", "select ran_at from schedule_runs where name = 'performance-alerts'")
        return rows[0][0] if rows else None


# ---- the recomputation from raw records ---------------------------------------------------------------------
def _pages(session, crm, path: str, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = session.get(crm.api(path), params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json().get("next_cursor")
        if not cursor:
            return items


def _local_month(timestamp: str) -> str:
    return dt.datetime.fromisoformat(timestamp).astimezone(ZONE).strftime("%Y-%m")


def recompute(crm, month: Month, rep_id: str, accounts: list[str], leads: list[str]) -> dict[str, Decimal]:
    """amy's month from what the API shows an executive: her confirmed orders that count toward
    quota (their lines not excluded), their payments, the accounts she opened, the calls, visits,
    meetings and demos she logged."""
    exec_ = crm.as_("exec")
    figures = dict.fromkeys(("revenue", "gross_margin", "orders", "collections", "new_accounts", "activities"),
                            Decimal("0.00"))
    for order in _pages(exec_, crm, "/orders", owner_id=rep_id):
        if order["status"] not in ("confirmed", "fulfilled", "paid") or not order["counts_toward_quota"]:
            continue
        history = exec_.get(crm.api(f"/orders/{order['id']}/history")).json()["items"]
        confirmed_at = next(h["at"] for h in history if h["action"] == "confirmed")
        if _local_month(confirmed_at) == month.label:
            figures["orders"] += 1
            for line in order["lines"]:
                if not line["excluded_from_quota"]:
                    figures["revenue"] += Decimal(line["line_total"])
                    figures["gross_margin"] += Decimal(line["line_total"]) - Decimal(line["unit_cost"]) * line["qty"]
        for payment in exec_.get(crm.api(f"/orders/{order['id']}/payments")).json()["items"]:
            if payment["paid_on"][:7] == month.label:
                figures["collections"] += Decimal(payment["amount"])
    for account_id in accounts:
        account = exec_.get(crm.api(f"/accounts/{account_id}")).json()
        if account["owner_id"] == rep_id and _local_month(account["created_at"]) == month.label:
            figures["new_accounts"] += 1
    logged = [a for account_id in accounts for a in exec_.get(crm.api(f"/accounts/{account_id}/activities")).json()["items"]]
    logged += [a for lead_id in leads for a in exec_.get(crm.api(f"/leads/{lead_id}/activities")).json()["items"]]
    figures["activities"] = Decimal(sum(1 for a in logged if a["kind"] in COUNTED and a["created_by"] == rep_id
                                        and _local_month(a["created_at"]) == month.label))
    return figures


def _attainment(actual: Decimal, target: Decimal | None) -> Decimal | None:
    return None if not target else (actual * HUNDRED / target).quantize(Decimal("0.1"), ROUND_HALF_UP)


def expected_view(figures: dict[str, Decimal], targets: dict[str, Decimal]) -> dict:
    metrics = {m: {"target": None if targets.get(m) is None else f"{targets[m]:.2f}", "actual": f"{v:.2f}",
                   "attainment": None if targets.get(m) is None else str(_attainment(v, targets[m]))}
               for m, v in figures.items()}
    score = sum((Decimal(i["weight"]) * min(_attainment(figures[i["metric"]], targets[i["metric"]]),
                                            Decimal(i["cap_pct"])) / HUNDRED
                 for i in SCHEME["metrics"] if targets.get(i["metric"])), Decimal(0))
    return {"metrics": metrics, "score": str(score.quantize(Decimal("0.1"), ROUND_HALF_UP))}


def brute_commission(revenue: Decimal, target: Decimal) -> Decimal:
    """One currency unit at a time, each at the rate of the attainment before it."""
    total = Decimal(0)
    for earned in range(int(revenue)):
        pct = Decimal(earned) * HUNDRED / target
        rate = [r for start, r in TIERS if start <= pct][-1] * (MULTIPLIER if pct >= ACCELERATE_ABOVE else 1)
        total += rate / HUNDRED
    return total.quantize(Decimal("0.01"))


def check_views(crm, month: Month, rep_id: str, expected: dict, commission: Decimal) -> None:
    """amy, her manager and an executive read the same figures, score and commission."""
    for reader in ("amy", "mgr-east", "exec"):
        session = crm.as_(reader)
        view = session.get(crm.api("/performance"), params={"period": month.label, "subject_id": rep_id}).json()
        wanted = {m: f for m, f in expected["metrics"].items() if reader != "amy" or m != "gross_margin"}
        assert view["metrics"] == wanted, (reader, view)  # margin is not for reps (CONTRACT §2)
        assert view["kpi"]["score"] == expected["score"], (reader, view["kpi"])
        statement = session.get(crm.api("/commission"), params={"period": month.label, "user_id": rep_id}).json()
        assert Decimal(statement["total"]) == commission, (reader, statement)
        assert sum(Decimal(line["commission"]) for line in statement["lines"]) == commission


def _alerts(crm, kind: str, rep_id: str, period: str) -> list[dict]:
    topic = f"{crm.topic_prefix}crm.orders.v1"
    found = []
    for message in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, timeout_ms=500):
        envelope = json.loads(message.value)
        if envelope["type"] == kind:
            alert = envelope["data"]["alert"]
            if alert["subject_id"] == rep_id and alert["period"] == period:
                found.append(envelope)
    return found


# ---- the story --------------------------------------------------------------------------------------------
def month_story(crm) -> None:
    month = Month(crm)
    admin, exec_, mgr, amy = (crm.as_(n) for n in ("admin", "exec", "mgr-east", "amy"))
    amy_id, east = crm.users["amy"]["id"], crm.teams["east"]["id"]
    wait_for(lambda: amy.get(crm.api("/order-types")).status_code == 200, timeout=60, what="amy known to orders")
    month.set_day(10)  # before any target: the schedule's day is the test's from here on
    # The rules of the game: the KPI scheme, east's commission plan, the alert rules.
    _put(exec_, crm, "/kpi-schemes", SCHEME)
    _put(exec_, crm, "/commission-plans", {"plans": [
        {"name": "east", "basis": "revenue", "teams": [east],
         "tiers": [{"from_pct": str(s), "rate_pct": str(r)} for s, r in TIERS],
         "accelerator": {"above_pct": str(ACCELERATE_ABOVE), "multiplier": str(MULTIPLIER)}}]})
    _put(exec_, crm, "/alert-rules", {"rules": [
        {"name": "month revenue reached", "kind": "target_reached", "metric": "revenue", "period_kind": "month",
         "threshold_pct": "100"},
        {"name": "month revenue pace", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 20,
         "below_pct": "50"}]})
    # Targets: the quarter's revenue split 30/30/40 with this month's share 40% (100,000.00).
    shares = {m: ("40" if m == month.label else "30") for m in month.months}
    r = mgr.post(crm.api("/targets"), json={"subject_type": "user", "subject_id": amy_id, "period": month.quarter,
                                            "metric": "revenue", "value": "250000.00", "distribution": shares})
    assert r.status_code == 201, r.text
    for metric, value in (("new_accounts", "2.00"), ("activities", "4.00"), ("collections", "50000.00")):
        r = mgr.post(crm.api("/targets"), json={"subject_type": "user", "subject_id": amy_id, "period": month.label,
                                                "metric": metric, "value": value})
        assert r.status_code == 201, r.text
    targets = {"revenue": Decimal("100000.00"), "new_accounts": Decimal(2), "activities": Decimal(4),
               "collections": Decimal("50000.00")}
    assert amy.post(crm.api("/targets"), json={"subject_type": "user", "subject_id": amy_id, "period": month.label,
                                               "metric": "orders", "value": "1.00"}).status_code == 403
    # Bad input is a 422 problem: a period that does not parse, a negative target, a distribution
    # not totalling 100, KPI weights not totalling 100.
    target = {"subject_type": "user", "subject_id": amy_id, "period": month.label, "metric": "orders", "value": "1.00"}
    scheme = exec_.get(crm.api("/kpi-schemes"))
    for r in (mgr.post(crm.api("/targets"), json={**target, "period": f"{month.year}-13"}),
              mgr.post(crm.api("/targets"), json={**target, "value": "-5.00"}),
              mgr.post(crm.api("/targets"), json={**target, "period": month.quarter,
                                                  "distribution": dict.fromkeys(month.months, "30")}),
              exec_.put(crm.api("/kpi-schemes"), json={"metrics": [{"metric": "revenue", "weight": 60}]},
                        headers={"If-Match": scheme.headers["ETag"]})):
        assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", r.text
    # The catalogue: a counted machine and a kit excluded from quota.
    uid = uuid.uuid4().hex[:6]
    machine = admin.post(crm.api("/products"), json={"sku": f"M-{uid}", "name": "Mill", "category": "machines",
                                                      "list_price": "10000.00", "unit_cost": "6000.00"}).json()
    kit = admin.post(crm.api("/products"), json={"sku": f"K-{uid}", "name": "Kit", "category": "kits",
                                                  "list_price": "5000.00", "unit_cost": "1000.00",
                                                  "excluded_from_quota": True}).json()
    # Two new accounts; the second becomes a house account.
    accounts = [amy.post(crm.api("/accounts"), json={"name": f"Month Co {n} {uid}"}).json()["id"] for n in (1, 2)]
    for account_id in accounts:
        wait_for(lambda a=account_id: crm.sql("orders", "select count(*) from accounts where id = %s", a)[0][0],
                 what="the account replicated to orders")
    assert admin.put(crm.api(f"/house-accounts/{accounts[1]}"), json={"house_account": True}).status_code == 200
    delivery = (dt.date.today() + dt.timedelta(days=20)).isoformat()

    def sell(account: str, lines: list[dict], **fields) -> dict:
        r = amy.post(crm.api("/orders"), json={"account_id": account, "delivery_date": delivery, "lines": lines,
                                               **fields})
        assert r.status_code == 201, r.text
        submitted = amy.post(crm.api(f"/orders/{r.json()['id']}/submit"))
        assert submitted.json()["status"] == "confirmed", submitted.text
        return submitted.json()

    counted = sell(accounts[0], [{"sku": machine["sku"], "qty": 4}, {"sku": kit["sku"], "qty": 2}])
    sample = sell(accounts[0], [{"sku": machine["sku"], "qty": 1}], type="sample")
    house = sell(accounts[1], [{"sku": machine["sku"], "qty": 2}])
    assert counted["counts_toward_quota"] and not sample["counts_toward_quota"] and not house["counts_toward_quota"]

    seen: list[dict] = []

    def settled(expected: dict) -> bool:
        view = amy.get(crm.api("/performance"), params={"period": month.label}).json()
        seen[:] = [view]
        return all(view["metrics"].get(m) == f for m, f in expected["metrics"].items() if m != "gross_margin")

    def step() -> dict:
        figures = recompute(crm, month, amy_id, accounts, leads)
        expected = expected_view(figures, targets)
        try:
            wait_for(lambda: settled(expected), timeout=60, what="amy's figures")
        except AssertionError:
            raise AssertionError(f"amy's figures: expected {expected}, seen {seen}") from None
        check_views(crm, month, amy_id, expected, brute_commission(figures["revenue"], targets["revenue"]))
        return figures

    leads: list[str] = []
    figures = step()
    assert figures["revenue"] == Decimal("40000.00") and figures["new_accounts"] == 2  # 40% of the month
    # Day 15: behind, but the pace rule looks on day 20.
    month.set_day(15)
    assert _alerts(crm, "performance.pace_warning", amy_id, month.label) == []
    # Day 20 at 40%: one warning, though the schedule runs every half second and the worker restarts.
    month.set_day(20)
    wait_for(lambda: _alerts(crm, "performance.pace_warning", amy_id, month.label), timeout=30,
             what="the pace warning")
    crm.stop("orders-worker")
    crm.start("orders-worker")
    month.set_day(20)  # the clock rewritten: the restarted schedule has run on day 20 again
    [warning] = _alerts(crm, "performance.pace_warning", amy_id, month.label)
    alert = warning["data"]["alert"]
    assert (alert["attainment"], alert["day_of_period"], alert["rep_id"], alert["manager_id"]) == (
        "40.0", 20, amy_id, crm.users["mgr-east"]["id"])
    assert alert["executive_ids"] == [crm.users["exec"]["id"]]
    # Paid in part; a visit and a note on the account, a call on a lead of hers.
    pay = amy.post(crm.api(f"/orders/{counted['id']}/pay"), json={"amount": "20000.00",
                                                                  "paid_on": dt.datetime.now(ZONE).date().isoformat()},
                   headers={"Idempotency-Key": f"pay-{counted['id']}"})
    assert pay.status_code == 200, pay.text
    for kind in ("visit", "note"):
        assert amy.post(crm.api(f"/accounts/{accounts[0]}/activities"),
                        json={"kind": kind, "summary": f"{kind} at the plant"}).status_code == 201
    lead = amy.post(crm.api("/leads"), json={"company": f"Lead Co {uid}", "contact_name": "Li Lei",
                                             "email": f"li.{uid}@example.com"}).json()
    leads.append(lead["id"])
    assert amy.post(crm.api(f"/leads/{lead['id']}/activities"), json={"kind": "call", "summary": "first call"}
                    ).status_code == 201
    figures = step()
    assert figures["activities"] == 2 and figures["collections"] == Decimal("20000.00")
    assert _alerts(crm, "performance.target_reached", amy_id, month.label) == []
    # Day 24: 100% reached, told once.
    month.set_day(24)
    last = sell(accounts[0], [{"sku": machine["sku"], "qty": 6}])
    figures = step()
    assert figures["revenue"] == Decimal("100000.00")
    wait_for(lambda: _alerts(crm, "performance.target_reached", amy_id, month.label), timeout=30,
             what="the target reached")
    # Replayed: the confirmation of the last order, and a payment, delivered again change nothing.
    topic = f"{crm.topic_prefix}crm.orders.v1"
    again = [json.loads(m.value) for m in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, timeout_ms=500)
             if json.loads(m.value)["type"] in ("order.confirmed", "order.payment_recorded")
             and json.loads(m.value)["subject"] in (last["id"], counted["id"])]
    assert len(again) >= 2
    produce(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, again)
    wait_for(lambda: all(crm.sql("orders", "select count(*) from processed_events where event_id = %s",
                                 e["id"])[0][0] for e in again), what="the replays consumed")
    month.set_day(25)
    assert step() == figures
    assert len(_alerts(crm, "performance.target_reached", amy_id, month.label)) == 1
    assert len(_alerts(crm, "performance.pace_warning", amy_id, month.label)) == 1
    # Rankings show a rep only her own row; another team's rep and marketing see none of it.
    ranking = amy.get(crm.api("/performance/ranking"), params={"period": month.label, "team_id": east}).json()
    assert [e["user_id"] for e in ranking["items"]] == [amy_id]
    managed = mgr.get(crm.api("/performance/ranking"), params={"period": month.label, "team_id": east}).json()
    assert amy_id in [e["user_id"] for e in managed["items"]]
    bo, mkt = crm.as_("bo"), crm.as_("mkt")
    for path, params in (("/performance", {"period": month.label, "subject_id": amy_id}),
                         ("/commission", {"period": month.label, "user_id": amy_id}),
                         ("/performance/contributions", {"period": month.label, "subject_id": amy_id}),
                         ("/performance/ranking", {"period": month.label, "team_id": east})):
        assert bo.get(crm.api(path), params=params).status_code == 404, path
        assert mkt.get(crm.api(path), params=params).status_code == 403, path
    assert all(t["subject_id"] != amy_id for t in bo.get(crm.api("/targets")).json()["items"])
    assert str(figures["revenue"]) not in json.dumps(bo.get(crm.api("/performance/ranking"), params={
        "period": month.label, "team_id": crm.teams["west"]["id"]}).json())
