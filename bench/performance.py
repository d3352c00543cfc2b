"""Performance benchmark (issue 16): 1,000 reps in 50 teams over 12 months in PostgreSQL.

The state is that of 500,000 counted orders and 2,000,000 activities already applied: their ledger
rows (`performance_entries`) and sums (`actuals`) go in by COPY, with every rep's monthly targets.
Then, with every process real:

- **events applied per second**: fresh order.confirmed (2 lines each) and activity.logged events
  are produced to Kafka before the orders worker starts, and the worker drains them (its
  `orders-performance` consumer: ledger, sums, alert checks, the processed-event record). Goal:
  at least 2,000 events/s. Baseline, in the same run: the same number of events applied with no
  alert rule (what the alert checks cost is the ratio); and the same with two worker processes
  sharing the partitions (the topics have 6, as deployed);
- **GET /performance** of a rep (read by their manager) and **GET /performance/ranking** of a team
  of 20, through the orders API under gunicorn (2 workers), one client. Goal: p99 < 100 ms.
"""
from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import requests
from kafka import KafkaProducer

from bench.common import infrastructure, summary_ms, timed_gets, write_result
from crmkit.auth import issue_token
from crmkit.events import encode, headers_for, new_event
from crmkit.kafka import ensure_topics
from infra.stack import SERVICES, api_process, migrate, service_env, worker_process
from services.orders.events import TOPIC_PARTITIONS

SERVICE = next(s for s in SERVICES if s.name == "orders")
SECRET = "bench-secret-bench-secret-bench-secret-0123"
PORT, METRICS_PORT = 18804, 18814
TEAMS, REPS_PER_TEAM, MONTHS = 50, 20, 12
CATEGORIES = [f"line-{i}" for i in range(8)]
REGIONS = ["华东", "华北", "华南", "西部", "海外"]
GOALS = {"events_per_second": 2000, "read_p99_ms": 100}
DEFAULT_RULES = {"rules": [
    {"name": "monthly revenue reached", "kind": "target_reached", "metric": "revenue", "period_kind": "month",
     "threshold_pct": "100"},
    {"name": "monthly activities reached", "kind": "target_reached", "metric": "activities", "period_kind": "month",
     "threshold_pct": "100"},
    {"name": "monthly revenue pace", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 20,
     "below_pct": "50"}]}


def _rep(i: int) -> tuple[str, str]:
    return f"rep-{i}", f"team-{i // REPS_PER_TEAM}"


def _months(now: dt.date) -> list[str]:
    return [f"{now.year}-{m:02d}" for m in range(1, MONTHS + 1)]


def _generate(dsn: str, orders: int, activities: int) -> dict:
    """The ledger and sums of `orders` counted orders (2 lines each) and `activities` activities,
    spread over the reps and the year; targets for every rep and team, every month."""
    rng = random.Random(16)
    today = dt.date.today()
    months = _months(today)
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    sums: dict[tuple, Decimal] = {}
    reps = TEAMS * REPS_PER_TEAM
    with psycopg.connect(dsn) as conn:
        columns = ("copy performance_entries (id, event_id, metric, user_id, team_id, month, occurred_on, amount, "
                   "product_category, region, source, source_id, order_id) from stdin")
        with conn.cursor().copy(columns) as copy:
            for _ in range(orders):
                user, team = _rep(rng.randrange(reps))
                month = rng.choice(months)
                day = dt.date(int(month[:4]), int(month[5:]), rng.randint(1, 28))
                order_id, event_id, region = str(uuid.uuid4()), str(uuid.uuid4()), rng.choice(REGIONS)
                rows = [("orders", Decimal(1), "")]
                for _ in range(2):
                    amount = Decimal(rng.randint(1, 50) * 1000)
                    category = rng.choice(CATEGORIES)
                    rows += [("revenue", amount, category), ("gross_margin", amount * Decimal("0.3"), category)]
                for metric, amount, category in rows:
                    copy.write_row((uuid.uuid4(), event_id, metric, user, team, month, day, amount, category, region,
                                    "order", order_id, order_id))
                    key = (user, team, metric, month, category, region)
                    sums[key] = sums.get(key, Decimal(0)) + amount
            for _ in range(activities):
                user, team = _rep(rng.randrange(reps))
                month = rng.choice(months)
                day = dt.date(int(month[:4]), int(month[5:]), rng.randint(1, 28))
                activity = str(uuid.uuid4())
                copy.write_row((uuid.uuid4(), activity, "activities", user, team, month, day, Decimal(1), "", "",
                                "activity", activity, None))
                key = (user, team, "activities", month, "", "")
                sums[key] = sums.get(key, Decimal(0)) + 1
        with conn.cursor().copy("copy actuals (user_id, team_id, metric, month, product_category, region, amount) "
                                "from stdin") as copy:
            for key, amount in sums.items():
                copy.write_row((*key, amount))
        totals: dict[tuple, Decimal] = {}
        for (user, team, metric, month, _, _), amount in sums.items():
            for total_key in (("user", user, metric, month), ("team", team, metric, month)):
                totals[total_key] = totals.get(total_key, Decimal(0)) + amount
        with conn.cursor().copy("copy actual_totals (kind, subject_id, metric, month, amount) from stdin") as copy:
            for key, amount in totals.items():
                copy.write_row((*key, amount))
        with conn.cursor().copy("copy targets (id, subject_type, subject_id, team_id, period, metric, value, scope, "
                                "created_by, created_at, updated_at, version) from stdin") as copy:
            for i in range(reps):
                user, team = _rep(i)
                for month in months:
                    # Generous enough that few reach them: the events below fire a handful of alerts.
                    for metric, value in (("revenue", 5_000_000), ("activities", 10_000), ("collections", 1_000_000)):
                        copy.write_row((uuid.uuid4(), "user", user, team, month, metric, Decimal(value), "|", "bench",
                                        now, now, 1))
            for t in range(TEAMS):
                for month in months:
                    copy.write_row((uuid.uuid4(), "team", f"team-{t}", f"team-{t}", month, "revenue",
                                    Decimal(100_000_000), "|", "bench", now, now, 1))
        with conn.cursor().copy("copy directory_users (id, role, team_id, active, updated_at) from stdin") as copy:
            copy.write_row(("ceo", "executive", None, True, now))
            copy.write_row(("vp", "manager", "sales", True, now))
            for t in range(TEAMS):
                copy.write_row((f"mgr-{t}", "manager", f"team-{t}", True, now))
            for i in range(reps):
                user, team = _rep(i)
                copy.write_row((user, "rep", team, True, now))
        with conn.cursor().copy("copy directory_teams (id, manager_id, parent_team_id, updated_at) from stdin") as copy:
            copy.write_row(("sales", "vp", None, now))
            for t in range(TEAMS):
                copy.write_row((f"team-{t}", f"mgr-{t}", "sales", now))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze")
        entries = conn.execute("select count(*) from performance_entries").fetchone()[0]
        actual_rows = conn.execute("select count(*) from actuals").fetchone()[0]
    return {"seconds": round(time.perf_counter() - started, 1), "orders": orders, "activities": activities,
            "ledger_rows": entries, "actuals_rows": actual_rows}


def _events(n: int, rng: random.Random) -> list[tuple[str, dict]]:
    """n fresh events, half counted orders (on crm.orders.v1), half activities (on crm.leads.v1)."""
    out = []
    reps = TEAMS * REPS_PER_TEAM
    for i in range(n):
        user, team = _rep(rng.randrange(reps))
        if i % 2 == 0:
            order_id = str(uuid.uuid4())
            lines = [{"sku": f"SKU-{k}", "name": "x", "category": rng.choice(CATEGORIES), "qty": 2,
                      "list_price": "10000.00", "unit_price": "10000.00", "discount_pct": "0.00",
                      "line_total": "20000.00", "unit_cost": "6000.00", "excluded_from_quota": False} for k in range(2)]
            order = {"id": order_id, "account_id": str(uuid.uuid4()), "owner_id": user, "team_id": team,
                     "credited_to": user, "counts_toward_quota": True, "status": "confirmed", "lines": lines}
            out.append(("crm.orders.v1", new_event("order.confirmed", order_id, {"order": order}, source="orders",
                                                   actor=user)))
        else:
            activity = {"activity_id": str(uuid.uuid4()), "lead_id": str(uuid.uuid4()), "kind": "call"}
            out.append(("crm.leads.v1", new_event("activity.logged", activity["lead_id"], activity, source="leads",
                                                  actor=user)))
    return out


def _drain(env: dict, state: Path, dsn: str, prefix: str, bootstrap: str, n: int, rng: random.Random,
           workers: int = 1) -> dict:
    """Produce n events, start the workers, and time them from the first applied event to the n-th."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024)
    for topic, event in _events(n, rng):
        producer.send(f"{prefix}{topic}", key=event["subject"].encode(), value=encode(event),
                      headers=headers_for(event))
    producer.flush()
    producer.close()

    def applied() -> int:
        with psycopg.connect(dsn) as conn:
            return conn.execute("select count(*) from processed_events where consumer = %s",
                                (f"{prefix}orders-performance",)).fetchone()[0]
    before = applied()
    procs = [worker_process(SERVICE, env, state_dir=state / f"w{i}", metrics_port=METRICS_PORT + i).start()
             for i in range(workers)]
    try:
        first = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            count = applied() - before
            if count and first is None:
                first = (time.perf_counter(), count)
            if count >= n:
                break
            time.sleep(0.2)
        done = time.perf_counter()
        assert applied() - before >= n, f"only {applied() - before} of {n} events applied"
    finally:
        for proc in procs:
            proc.stop()
    seconds = done - first[0]
    return {"events": n, "workers": workers, "seconds": round(seconds, 2),
            "events_per_second": round((n - first[1]) / seconds)}


def _put_rules(base: str, rules: dict) -> None:
    admin = requests.Session()
    admin.headers["Authorization"] = "Bearer " + issue_token(secret=SECRET, user_id="ceo", role="executive")
    current = admin.get(f"{base}/alert-rules")
    r = admin.put(f"{base}/alert-rules", json=rules, headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text


def _reads(base: str, n: int) -> dict:
    rng = random.Random(3)
    month = dt.date.today().strftime("%Y-%m")
    out = {}
    for kind in ("performance", "ranking"):
        times = []
        for _ in range(n // 10):
            team = rng.randrange(TEAMS)
            s = requests.Session()
            s.headers["Authorization"] = "Bearer " + issue_token(
                secret=SECRET, user_id=f"mgr-{team}", role="manager", teams=[f"team-{team}"], manages=[f"team-{team}"])
            user = f"rep-{team * REPS_PER_TEAM + rng.randrange(REPS_PER_TEAM)}"
            url = f"{base}/performance?period={month}&subject_id={user}" if kind == "performance" else \
                f"{base}/performance/ranking?period={month}&team_id=team-{team}"
            timed_gets(s, url, 2)  # warm-up
            times += timed_gets(s, url, 10)
        out[kind] = summary_ms(times)
    return out


def run(orders: int = 500_000, activities: int = 2_000_000, events: int = 20_000, n: int = 300) -> dict:
    broker, pg = infrastructure()
    url = pg.create_database()
    dsn = url.replace("postgresql+psycopg", "postgresql")
    state = Path(tempfile.mkdtemp(prefix="bench-performance-"))
    prefix = f"b{uuid.uuid4().hex[:8]}."
    env = service_env({"ORDERS_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                       "CRM_TOPIC_PREFIX": prefix, "CRM_ENSURE_TOPICS": "1", "ORDERS_ALERT_INTERVAL_SECONDS": "3600"},
                      state_dir=state)
    api = None
    try:
        migrate(SERVICE, env)
        generated = _generate(dsn, orders, activities)
        api = api_process(SERVICE, env, state_dir=state, port=PORT, workers=2).start()
        api.wait_healthy()
        base = f"http://127.0.0.1:{PORT}/api/v1"
        rng = random.Random(7)
        # The topics as deployed (6 partitions each), before anything is produced to them.
        ensure_topics(broker.bootstrap, {f"{prefix}{t}": n for t, n in TOPIC_PARTITIONS.items()})
        _put_rules(base, {"rules": []})
        baseline = _drain(env, state, dsn, prefix, broker.bootstrap, events, rng)
        _put_rules(base, DEFAULT_RULES)
        applied = _drain(env, state, dsn, prefix, broker.bootstrap, events, rng)
        # Scaled out: two worker processes share the topics' partitions (on this machine's two cores,
        # beside PostgreSQL and Kafka).
        scaled = _drain(env, state, dsn, prefix, broker.bootstrap, events, rng, workers=2)
        reads = _reads(base, n)
        worst = max(r["p99_ms"] for r in reads.values())
        result = {
            "generated": generated, "events_with_alert_rules": applied, "baseline_events_without_rules": baseline,
            "events_with_alert_rules_two_workers": scaled,
            "ratio_rate_with_rules_to_without": round(applied["events_per_second"] / baseline["events_per_second"], 2),
            "reads": reads,
            "goals": {"events_per_second": GOALS["events_per_second"],
                      "events_met_one_worker": applied["events_per_second"] >= GOALS["events_per_second"],
                      "events_met_two_workers": scaled["events_per_second"] >= GOALS["events_per_second"],
                      "read_p99_ms": GOALS["read_p99_ms"], "worst_read_p99_ms": worst,
                      "read_met": worst < GOALS["read_p99_ms"]},
            "note": "state of 500k orders and 2M activities loaded by COPY; fresh events (half order.confirmed with "
                    "2 lines, half activity.logged) drained by the real orders worker from Kafka into PostgreSQL; "
                    "reads through the orders API under gunicorn (2 workers) as the team's manager, one client"}
        write_result("performance", result)
        return result
    finally:
        if api:
            api.stop()
        pg.drop_database(url)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
