"""The rep's day benchmark (issue 18), in PostgreSQL: 1,000 reps in 50 teams of 20, 8 visits a day
over the last 60 working days (480,000 visits, their 336,000 check-in activities, 60,000 submitted
reports) and what the other services told of those days (leads, stage moves, orders, payments,
pipeline changes). Measured:

- p50/p99 of a manager's team day (GET /visits?date=&team_id=, GET /daily-reports?date= for a past
  day, submitted, and for today, drafted) and of GET /reports/weekly-progress (a manager by rep; an
  executive by team), through the API under gunicorn, one client; the baseline is the same rows
  read by one hand-written SQL query in the same run (the database's floor), as a ratio;
- drafting every report of a day for all 1,000 reps at once (daily_reports.draft), against drafting
  them one rep at a time (100 reps, scaled to 1,000), as a ratio."""
from __future__ import annotations

import datetime as dt
import json
import os
import random
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import requests

from bench.common import infrastructure, summary_ms, timed_gets, write_result
from crmkit.auth import issue_token
from crmkit.db import Database
from crmkit.outbox import OutboxWriter
from crmkit.periods import day_bounds, local_day
from infra.stack import SERVICES, api_process, migrate, service_env
from services.opportunities import daily_reports
from services.opportunities.db import KIT_TABLES

SERVICE = next(s for s in SERVICES if s.name == "opportunities")
SECRET = "bench-secret-bench-secret-bench-secret-0123"
PORT = 18812
TEAM_SIZE, VISITS_A_DAY, DAYS = 20, 8, 60


def _working_days(today: dt.date, n: int) -> list[dt.date]:
    days, day = [], today - dt.timedelta(days=1)
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return sorted(days)


def _generate(dsn: str, reps: int) -> dict:
    rng = random.Random(18)
    now = dt.datetime.now(dt.UTC)
    today = local_day(now)
    days = _working_days(today, DAYS)
    teams = reps // TEAM_SIZE
    people = [(f"rep-{t}-{r}", f"team-{t}") for t in range(teams) for r in range(TEAM_SIZE)]
    started = time.perf_counter()
    counts = dict.fromkeys(("visits", "activities", "reports"), 0)
    with psycopg.connect(dsn) as conn:
        accounts = {}
        with conn.cursor().copy("copy accounts (id, name, type, region, tier, owner_id, team_id, created_by, "
                                "created_at, updated_at, version) from stdin") as copy:
            for owner, team in people:
                accounts[owner] = [uuid.uuid4() for _ in range(5)]
                for i, account in enumerate(accounts[owner]):
                    copy.write_row((account, f"{owner} customer {i}", "b2b", "华东", "unranked", owner, team, "bench",
                                    now, now, 1))
        activities = []  # one COPY at a time per connection: the check-ins' activities go in after
        with conn.cursor().copy("copy visits (id, owner_id, team_id, account_id, kind, planned_at, day, purpose, "
                                "status, checked_in_at, outcome, activity_id, created_by, created_at, updated_at, "
                                "version) from stdin") as visits:
            for day in [*days, today]:
                start, _ = day_bounds(day)
                for owner, team in people:
                    for k in range(VISITS_A_DAY):
                        planned = start + dt.timedelta(hours=9, minutes=50 * k)
                        roll = rng.random()
                        status = ("planned" if day == today else "done" if roll < 0.7 else "missed" if roll < 0.95
                                  else "rescheduled")
                        account = rng.choice(accounts[owner])
                        activity = uuid.uuid4() if status == "done" else None
                        visits.write_row((uuid.uuid4(), owner, team, account, "visit", planned, day, "bench", status,
                                          planned if activity else None, "ok" if activity else None, activity, owner,
                                          planned, planned, 1))
                        counts["visits"] += 1
                        if activity:
                            activities.append((activity, account, "visit", "ok", planned, owner, planned))
        with conn.cursor().copy("copy activities (id, account_id, kind, summary, occurred_at, created_by, "
                                "created_at) from stdin") as copy:
            for row in activities:
                copy.write_row(row)
        counts["activities"] = len(activities)
        summary = json.dumps({"visits": {"planned": 8, "done": 6, "missed": 2, "rescheduled": 0, "items": []},
                              "activities": {"visit": 6}, "calls": 0, "new_leads": 1, "new_leads_by_source": {"web": 1},
                              "opportunities_created": {"count": 0, "amount": "0.00"}, "stage_moves": [],
                              "orders_confirmed": {"count": 0, "amount": "0.00"}, "collected": "0.00"})
        with conn.cursor().copy("copy daily_reports (id, owner_id, team_id, day, status, notes, market, summary, "
                                "submitted_at, created_at, updated_at, version) from stdin") as copy:
            for day in days:
                end = day_bounds(day)[1]
                for owner, team in people:
                    copy.write_row((daily_reports.report_id(owner, day), owner, team, day, "submitted", "bench", "[]",
                                    summary, end, end, end, 2))
                    counts["reports"] += 1
        rows: dict[str, list] = {"known_leads": [], "stage_moves": [], "pipeline_changes": [], "order_facts": [],
                                 "payment_facts": []}
        for day in [*days, today]:
            start, _ = day_bounds(day)
            for owner, team in people:
                moment = start + dt.timedelta(hours=rng.randint(9, 18))
                rows["known_leads"].append((uuid.uuid4(), owner, team, "Lead Co", rng.choice(("web", "event", "referral")),
                                            "new", 1, moment))
                if rng.random() < 0.3:
                    rows["stage_moves"].append((uuid.uuid4(), uuid.uuid4(), rng.choice(accounts[owner]), owner, team,
                                                "qualification", "needs_analysis", moment))
                    rows["pipeline_changes"].append((uuid.uuid4(), uuid.uuid4(), owner, team,
                                                     Decimal(rng.randint(1, 9) * 1000), moment))
                if rng.random() < 0.1:
                    order = str(uuid.uuid4())
                    rows["order_facts"].append((order, rng.choice(accounts[owner]), owner, team, Decimal("50000.00"),
                                                moment))
                    rows["payment_facts"].append((str(uuid.uuid4()), order, owner, team, Decimal("20000.00"), day))
        columns = {"known_leads": "id, owner_id, team_id, company, source, status, version, created_at",
                   "stage_moves": "id, opportunity_id, account_id, owner_id, team_id, from_stage, to_stage, moved_at",
                   "pipeline_changes": "id, opportunity_id, owner_id, team_id, delta, changed_at",
                   "order_facts": "order_id, account_id, owner_id, team_id, total, confirmed_at",
                   "payment_facts": "payment_id, order_id, owner_id, team_id, amount, paid_on"}
        # Each rep's daily attainment of a revenue and a collections target (month, quarter, year),
        # every calendar day of the span, as the orders service publishes it.
        rows["attainment_snapshots"] = []
        day = days[0]
        while day <= today:
            periods = (f"{day.year}-{day.month:02d}", f"{day.year}-Q{(day.month - 1) // 3 + 1}", str(day.year))
            for owner, team in people:
                for metric in ("revenue", "collections"):
                    for period in periods:
                        rows["attainment_snapshots"].append(("user", owner, metric, period, day, Decimal("100000.00"),
                                                             Decimal("42000.00"), Decimal("42.0"),
                                                             json.dumps({team: "42000.00"})))
            day += dt.timedelta(days=1)
        columns["attainment_snapshots"] = ("subject_type, subject_id, metric, period, day, target, actual, attainment, "
                                           "by_team")
        for table, values in rows.items():
            with conn.cursor().copy(f"copy {table} ({columns[table]}) from stdin") as copy:
                for row in values:
                    copy.write_row(row)
            counts[table] = len(values)
        with conn.cursor().copy("copy directory_users (id, role, team_id, active, updated_at) from stdin") as copy:
            copy.write_row(("ceo", "executive", None, True, now))
            for t in range(teams):
                copy.write_row((f"mgr-{t}", "manager", f"team-{t}", True, now))
            for owner, team in people:
                copy.write_row((owner, "rep", team, True, now))
        with conn.cursor().copy("copy directory_teams (id, manager_id, updated_at) from stdin") as copy:
            for t in range(teams):
                copy.write_row((f"team-{t}", f"mgr-{t}", now))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return {"seconds": round(time.perf_counter() - started, 1), "reps": reps, "days": len(days), **counts}


def _floor(dsn: str, sql: str, params: tuple, n: int) -> list[float]:
    """The same rows by one hand-written query over one open connection: the database's floor."""
    times = []
    with psycopg.connect(dsn) as conn:
        for i in range(n + 3):
            t = time.perf_counter()
            conn.execute(sql, params).fetchall()
            if i >= 3:
                times.append(time.perf_counter() - t)
    return times


def _requests(base: str, dsn: str, n: int) -> dict:
    today = local_day(dt.datetime.now(dt.UTC))
    past = _working_days(today, 1)[0]
    week = f"{today.isocalendar()[0]}-W{today.isocalendar()[1]:02d}"
    manager = requests.Session()
    manager.headers["Authorization"] = "Bearer " + issue_token(secret=SECRET, user_id="mgr-0", role="manager",
                                                               teams=["team-0"], manages=["team-0"])
    executive = requests.Session()
    executive.headers["Authorization"] = "Bearer " + issue_token(secret=SECRET, user_id="ceo", role="executive")
    monday = today - dt.timedelta(days=today.weekday() + 7)  # last week's: the report's two weeks
    cases = {
        "team_day_visits": (manager, f"/visits?date={past}&team_id=team-0&limit=200",
                            "select * from visits where team_id = %s and day = %s order by planned_at, id limit 201",
                            ("team-0", past)),
        "team_day_reports_submitted": (manager, f"/daily-reports?date={past}&limit=50",
                                       "select * from daily_reports where team_id = %s and day = %s order by owner_id",
                                       ("team-0", past)),
        "team_day_reports_drafted_today": (manager, f"/daily-reports?date={today}&limit=50",
                                           "select owner_id, status, count(*) from visits where team_id = %s and "
                                           "day = %s group by owner_id, status", ("team-0", today)),
        "weekly_progress_manager_by_rep": (manager, f"/reports/weekly-progress?week={week}&group_by=owner",
                                           "select owner_id, day, status, count(*) from visits where team_id = %s "
                                           "and day >= %s and day <= %s group by owner_id, day, status",
                                           ("team-0", monday, today)),
        "weekly_progress_executive_by_team": (executive, f"/reports/weekly-progress?week={week}&group_by=team",
                                              "select team_id, status, count(*) from visits where day >= %s and "
                                              "day <= %s group by team_id, status", (monday, today)),
    }
    out = {}
    for name, (session, path, sql, params) in cases.items():
        timed_gets(session, base + path, 3)  # warm-up (the first GET of today writes its draft rows)
        api = summary_ms(timed_gets(session, base + path, n))
        floor = summary_ms(_floor(dsn, sql, params, n))
        out[name] = {"api": api, "sql_floor": floor, "ratio_p50_api_to_floor": round(api["p50_ms"] / floor["p50_ms"], 1),
                     "goal_p99_ms": 100, "met": api["p99_ms"] < 100}
    return out


def _drafting(url: str, reps: int) -> dict:
    os.environ.update({"OPPORTUNITIES_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET})
    db = Database(url, OutboxWriter(KIT_TABLES["outbox"], "opportunities"))
    day = _working_days(local_day(dt.datetime.now(dt.UTC)), 1)[0]
    owners = [f"rep-{t}-{r}" for t in range(reps // TEAM_SIZE) for r in range(TEAM_SIZE)]
    with db.uow(readonly=True) as uow:
        t = time.perf_counter()
        drafts = daily_reports.draft(uow, day, owners)
        batch = time.perf_counter() - t
    sample = owners[:100]
    with db.uow(readonly=True) as uow:
        t = time.perf_counter()
        for owner in sample:
            daily_reports.draft(uow, day, [owner])
        one_by_one = (time.perf_counter() - t) * len(owners) / len(sample)
    db.engine.dispose()
    visits = sum(d["visits"]["planned"] + d["visits"]["rescheduled"] for d in drafts.values())
    return {"reps": len(owners), "visits_in_drafts": visits, "batch_seconds": round(batch, 2),
            "one_rep_at_a_time_seconds_scaled": round(one_by_one, 2),
            "ratio_batch_to_one_at_a_time": round(batch / one_by_one, 3), "goal_seconds": 60, "met": batch < 60}


def run(reps: int = 1_000, n: int = 200) -> dict:
    _broker, pg = infrastructure()
    url = pg.create_database()
    dsn = url.replace("postgresql+psycopg", "postgresql")
    state = Path(tempfile.mkdtemp(prefix="bench-visits-"))
    env = service_env({"OPPORTUNITIES_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET,
                       "KAFKA_BOOTSTRAP_SERVERS": _broker.bootstrap, "CRM_ENSURE_TOPICS": "0"}, state_dir=state)
    api = None
    try:
        migrate(SERVICE, env)
        generated = _generate(dsn, reps)
        api = api_process(SERVICE, env, state_dir=state, port=PORT, workers=2).start()
        api.wait_healthy()
        measured = _requests(f"http://127.0.0.1:{PORT}/api/v1", dsn, n)
        drafting = _drafting(url, reps)
        result = {"generated": generated, "requests": measured, "drafting_a_day": drafting,
                  "note": "requests through the API under gunicorn (2 workers), one client, against one SQL query "
                          "of the same rows over an open connection; drafting in one process"}
        write_result("visits", result)
        return result
    finally:
        if api:
            api.stop()
        pg.drop_database(url)
