"""Look-alike deals under load (issue 12): 16 writers creating opportunities through the gateway for
30 s, every process real (gateway, services and workers under gunicorn, Kafka, PostgreSQL).

Two phases in the same run, alternating:
- "look_alike": every writer's deals share one region and product set, so every create finds the
  others as collision candidates and waits for the same match-key locks;
- "unrelated" (the baseline): each writer has a region and products of its own, so no create waits
  for another's keys.

Reports p50/p99/max per phase, the statuses (the goal is no 5xx and no 504 at all), the
collision events per create (at most one), and the ratio of the look-alike p99 to the baseline's.
Goal: look-alike p99 under 2 s."""
from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.common import infrastructure, summary_ms, write_result
from tests.e2e.gateway_stack import start_crm, stop_crm
from tests.infra import read_topic, wait_for

WRITERS = 16
GOAL_P99_MS = 2000


def _phase(crm, sessions, accounts, *, look_alike: bool, seconds: float) -> dict:
    close = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    tag = uuid.uuid4().hex[:8]
    latencies, statuses, created, lock = [], Counter(), [], threading.Lock()
    deadline = time.monotonic() + seconds

    def write(i: int) -> None:
        session = sessions[i % len(sessions)]  # and accounts[i % len(accounts)] is that rep's own
        # Look-alike: one region and one product set for everyone; unrelated: one per writer.
        own = "all" if look_alike else str(i)
        region, skus = f"华东-{tag}-{own}", [f"SW-{tag}-{own}", f"AP-{tag}-{own}"]
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {"account_id": accounts[i % len(accounts)], "name": f"core network {i}-{n}",
                    "amount": f"{480000 + i}.00", "expected_close_date": close, "region": region,
                    "products": [{"sku": s, "qty": 1, "unit_price": "1000.00"} for s in skus]}
            started = time.perf_counter()
            r = session.post(crm.api("/opportunities"), json=body, timeout=60)
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses[r.status_code] += 1
                if r.status_code == 201:
                    created.append(r.json()["id"])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**summary_ms(latencies), "max_ms": round(max(latencies) * 1000, 1),
            "creates_per_second": round(statuses[201] / seconds, 1), "statuses": dict(statuses),
            "created": created}


def _events_per_create(crm, created: set[str]) -> dict:
    wait_for(lambda: crm.sql("opportunities", "select count(*) from outbox where published_at is null")[0][0] == 0,
             timeout=120, what="the outbox relayed")
    announced = Counter()
    for message in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.opportunities.v1",
                              timeout_ms=5000):
        if dict(message.headers).get("type") == b"opportunity.collision_detected":
            subject = message.key.decode() if message.key else None
            if subject in created:
                announced[subject] += 1
    return {"creates_announcing": len(announced), "max_events_per_create": max(announced.values(), default=0),
            "events": sum(announced.values())}


def run(seconds: int = 30) -> dict:
    broker, pg = infrastructure()
    state = Path(tempfile.mkdtemp(prefix="crm-bench-look-alike-"))
    crm = start_crm(broker, pg, state)
    try:
        sessions = [crm.as_(name) for name in ("ann", "amy", "nora", "bo")]
        accounts = []
        for s in sessions:
            r = s.post(crm.api("/accounts"), json={"name": f"Integrator {uuid.uuid4().hex[:8]}", "region": "华东"})
            assert r.status_code == 201, r.text
            accounts.append(r.json()["id"])
        _phase(crm, sessions, accounts, look_alike=False, seconds=3)  # warm-up: pools, caches, first plans
        phases = {"unrelated": [], "look_alike": []}
        for _round in range(2):
            for name in ("unrelated", "look_alike"):
                phases[name].append(_phase(crm, sessions, accounts, look_alike=name == "look_alike",
                                           seconds=seconds / 2))
        look_alike_ids = {i for p in phases["look_alike"] for i in p.pop("created")}
        for p in phases["unrelated"]:
            p.pop("created")
        events = _events_per_create(crm, look_alike_ids)
    finally:
        stop_crm(crm, pg)

    def worst(name: str, key: str) -> float:
        return max(p[key] for p in phases[name])

    p99, baseline_p99 = worst("look_alike", "p99_ms"), worst("unrelated", "p99_ms")
    server_errors = sum(n for p in phases["look_alike"] + phases["unrelated"]
                        for status, n in p["statuses"].items() if status >= 500)
    result = {"writers": WRITERS, "seconds_per_phase": seconds / 2, "rounds": 2, "phases": phases,
              "collision_events": events, "look_alike_p99_ms": p99, "baseline_p99_ms": baseline_p99,
              "ratio_p99_to_baseline": round(p99 / baseline_p99, 2), "server_errors": server_errors,
              "goal": {"p99_ms_below": GOAL_P99_MS, "met": p99 < GOAL_P99_MS and server_errors == 0
                       and events["max_events_per_create"] <= 1}}
    write_result("look_alike", result)
    return result
