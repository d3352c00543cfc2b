"""Opportunities benchmark (issue 5), over 200,000 open opportunities in PostgreSQL:

- p50/p99 of GET /reports/forecast and GET /reports/pipeline (and of a list page, newest first and
  by amount) for a rep, a manager (one team of 20) and an executive (everything), through the
  opportunities API under gunicorn;
- p50/p99 of creating an opportunity with collision detection on and off (the service layer's
  create in one transaction, as the API route runs it), alternating, and the ratio
  create-with-detection / create-without.

The rows go in with COPY, match keys included (collisions.stored_keys of every open deal), so the
detector searches a realistically full index."""
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
from crmkit.auth import Principal, issue_token
from crmkit.db import Database
from crmkit.outbox import OutboxWriter
from crmkit.settings import load_settings
from infra.stack import SERVICES, api_process, migrate, service_env
from services.opportunities import collisions, deals
from services.opportunities.db import KIT_TABLES

SERVICE = next(s for s in SERVICES if s.name == "opportunities")
SECRET = "bench-secret-bench-secret-bench-secret-0123"
PORT = 18802
TEAMS, REPS_PER_TEAM = 10, 20
REGIONS = ["华东", "华北", "华南", "西南", "西北", "华中", "东北", "East", "West", "Central"]
SKUS = [f"SKU-{i:03d}" for i in range(200)]
# Distinctive names drawn from 3,000 common characters: like real customers, few share a name.
CHARACTERS = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
TRADES = ["系统集成", "信息技术", "网络科技", "软件", "电子", "数据服务", "智能科技", "通信工程", "Systems", "Software"]
FORMS = ["有限公司", "股份有限公司", "有限责任公司", "Co., Ltd."]


def _name(rng: random.Random) -> str:
    return "".join(rng.sample(CHARACTERS, rng.choice((2, 3, 4)))) + rng.choice(TRADES) + rng.choice(FORMS)


def _generate(dsn: str, total: int) -> dict:
    rng = random.Random(42)
    today = dt.date.today()
    now = dt.datetime.now(dt.UTC)
    accounts = []
    started = time.perf_counter()
    match_keys: list[tuple[str, uuid.UUID, str]] = []  # one COPY at a time per connection
    with psycopg.connect(dsn) as conn:
        with conn.cursor().copy("copy accounts (id, name, type, region, tier, owner_id, team_id, created_by, "
                                "created_at, updated_at, version) from stdin") as copy:
            for i in range(total // 4):
                team = i % TEAMS
                owner = f"rep-{team}-{rng.randrange(REPS_PER_TEAM)}"
                account = (uuid.uuid4(), _name(rng), rng.choice(REGIONS), owner, f"team-{team}")
                accounts.append(account)
                copy.write_row((account[0], account[1], "b2b", account[2], "unranked", owner, account[4], "bench",
                                now, now, 1))
        with conn.cursor().copy("copy opportunities (id, account_id, name, stage, probability, amount, currency, "
                                "expected_close_date, region, products, status, checklist_done, stage_entered_at, "
                                "expense_total, version, owner_id, team_id, created_by, created_at, updated_at) "
                                "from stdin") as copy:
            stages = [("qualification", 10), ("needs_analysis", 20), ("needs_confirmed", 40), ("quote", 60),
                      ("negotiation", 80), ("contract", 90)]
            for i in range(total):
                account_id, name, region, owner, team = accounts[i % len(accounts)]
                stage, probability = rng.choice(stages)
                skus = rng.sample(SKUS, rng.randint(1, 4))
                products = [{"sku": s, "qty": rng.randint(1, 5), "unit_price": "1000.00"} for s in skus]
                amount = Decimal(rng.randint(10_000, 3_000_000))
                close = today + dt.timedelta(days=rng.randint(-30, 540))
                created = now - dt.timedelta(minutes=i)
                oid = uuid.uuid4()
                copy.write_row((oid, account_id, f"Deal {i}", stage, probability, amount, "CNY", close, region,
                                json.dumps(products), "open", "{}", created, Decimal(0), 1, owner, team, "bench",
                                created, created))
                deal = collisions.Deal.of(name, region, products, amount, close)
                match_keys += [(key, oid, owner) for key in collisions.stored_keys(deal)]
        with conn.cursor().copy("copy opportunity_match_keys (key, opportunity_id, owner_id) from stdin") as copy:
            for row in match_keys:
                copy.write_row(row)
        with conn.cursor().copy("copy directory_users (id, role, team_id, active, updated_at) from stdin") as copy:
            for team in range(TEAMS):
                copy.write_row((f"mgr-{team}", "manager", f"team-{team}", True, now))
                for rep in range(REPS_PER_TEAM):
                    copy.write_row((f"rep-{team}-{rep}", "rep", f"team-{team}", True, now))
        with conn.cursor().copy("copy directory_teams (id, manager_id, updated_at) from stdin") as copy:
            for team in range(TEAMS):
                copy.write_row((f"team-{team}", f"mgr-{team}", now))
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return {"seconds": round(time.perf_counter() - started, 1), "accounts": len(accounts), "match_keys": len(match_keys)}


def _reports(base: str, n: int) -> dict:
    quarter = f"{dt.date.today().year}-Q{(dt.date.today().month - 1) // 3 + 1}"
    viewers = {"rep": issue_token(secret=SECRET, user_id="rep-0-0", role="rep", teams=["team-0"]),
               "manager": issue_token(secret=SECRET, user_id="mgr-0", role="manager", teams=["team-0"],
                                      manages=["team-0"]),
               "executive": issue_token(secret=SECRET, user_id="ceo", role="executive")}
    out = {}
    for viewer, token in viewers.items():
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        for report, path in (("forecast", f"/reports/forecast?period={quarter}&group_by=owner"),
                             ("pipeline", "/reports/pipeline?group_by=stage"),
                             ("list_newest", "/opportunities?limit=50"),
                             ("list_by_amount", "/opportunities?limit=50&sort=-amount")):
            timed_gets(s, base + path, 3)  # warm-up
            out[f"{report}_{viewer}"] = summary_ms(timed_gets(s, base + path, n))
    return out


def _creates(url: str, n: int) -> dict:
    """Alternate creates with and without detection, so both see the same cache and load."""
    db = Database(url, OutboxWriter(KIT_TABLES["outbox"], "opportunities"))
    settings = load_settings("opportunities")
    rng = random.Random(7)
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        accounts = conn.execute("select id, owner_id, team_id from accounts order by random() limit 500").fetchall()
    times: dict[bool, list[float]] = {True: [], False: []}
    found = 0
    for i in range(2 * n + 20):
        detect = i % 2 == 0
        account_id, owner, team = rng.choice(accounts)  # a rep adds a deal to one of their accounts
        principal = Principal(user_id=owner, role="rep", teams=(team,))
        fields = {"account_id": account_id, "name": f"Bench deal {i}",
                  "amount": Decimal(rng.randint(10_000, 3_000_000)), "region": rng.choice(REGIONS),
                  "expected_close_date": dt.date.today() + dt.timedelta(days=rng.randint(0, 365)),
                  "products": [{"sku": s, "qty": 1, "unit_price": Decimal("1000.00")}
                               for s in rng.sample(SKUS, rng.randint(1, 4))]}
        t = time.perf_counter()
        with db.uow() as uow:
            opp = deals.create_opportunity(uow, settings, principal, fields, detect=detect)
            uow.commit()
        elapsed = time.perf_counter() - t
        if i >= 20:  # the first ones warm connections and plans
            times[detect].append(elapsed)
            if detect:
                with db.uow(readonly=True) as uow:
                    found += bool(deals.render_opportunities(uow, [opp])[0].collisions)
    db.engine.dispose()
    with_detection, without = summary_ms(times[True]), summary_ms(times[False])
    return {"create_with_detection": with_detection, "create_without_detection": without,
            "ratio_p50_with_to_without": round(with_detection["p50_ms"] / without["p50_ms"], 2),
            "creates_that_found_a_collision": found}


def run(total: int = 200_000, n: int = 60) -> dict:
    _broker, pg = infrastructure()
    url = pg.create_database()
    dsn = url.replace("postgresql+psycopg", "postgresql")
    state = Path(tempfile.mkdtemp(prefix="bench-opps-"))
    env = service_env({"OPPORTUNITIES_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET,
                       "KAFKA_BOOTSTRAP_SERVERS": _broker.bootstrap, "CRM_ENSURE_TOPICS": "0"}, state_dir=state)
    api = None
    try:
        migrate(SERVICE, env)
        generated = _generate(dsn, total)
        api = api_process(SERVICE, env, state_dir=state, port=PORT, workers=2).start()
        api.wait_healthy()
        reports = _reports(f"http://127.0.0.1:{PORT}/api/v1", n)
        os.environ.update({"OPPORTUNITIES_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET})
        creates = _creates(url, 300)
        result = {"open_opportunities": total, "generated": generated, "reports": reports, **creates,
                  "note": "reports through the API under gunicorn (2 workers), one client; creates through the "
                          "service layer in one process, detection on and off alternating"}
        write_result("opportunities", result)
        return result
    finally:
        if api:
            api.stop()
        pg.drop_database(url)
