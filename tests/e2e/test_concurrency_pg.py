"""Issue 12 under concurrency, through the gateway on PostgreSQL with every process real: look-alike
deals from 16 writers, conversions racing a handover, and a leaver who keeps writing while being
deactivated and handed over."""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter

import pytest

from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
CLOSE = (dt.date.today() + dt.timedelta(days=40)).isoformat()


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def test_sixteen_writers_of_look_alike_deals_stay_fast_and_announce_once_per_deal(crm):
    sessions = [crm.as_(name) for name in ("ann", "amy", "nora", "bo")]
    region, skus = f"华东-{_uid()}", [f"SW-{_uid()}", f"AP-{_uid()}"]
    accounts = {id(s): s.post(crm.api("/accounts"), json={"name": f"Integrator {_uid()}", "region": region}).json()["id"]
                for s in sessions}
    latencies, statuses, created, lock = [], Counter(), [], threading.Lock()
    deadline = time.monotonic() + 30

    def write(i: int) -> None:
        session = sessions[i % len(sessions)]
        while time.monotonic() < deadline:
            body = {"account_id": accounts[id(session)], "name": f"core network {i}", "amount": f"{480000 + i}.00",
                    "expected_close_date": CLOSE, "region": region,
                    "products": [{"sku": s, "qty": 1, "unit_price": "1000.00"} for s in skus]}
            started = time.perf_counter()
            r = session.post(crm.api("/opportunities"), json=body, timeout=30)
            with lock:
                latencies.append(time.perf_counter() - started)
                statuses[r.status_code] += 1
                if r.status_code == 201:
                    created.append(r.json()["id"])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"16 writers of look-alike deals for 30 s: {dict(statuses)}; p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    assert set(statuses) == {201} and len(created) > 50
    assert p99 < 2.0
    mine = set(created)
    wait_for(lambda: crm.sql("opportunities", "select count(*) from outbox where published_at is null")[0][0] == 0,
             timeout=60, what="the outbox relayed")
    announced = Counter()
    for message in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.opportunities.v1",
                              timeout_ms=3000):
        if dict(message.headers).get("type") == b"opportunity.collision_detected":
            subject = message.key.decode() if message.key else None
            if subject in mine:
                announced[subject] += 1
    assert announced and max(announced.values()) == 1  # one event per deal, not one per pair
