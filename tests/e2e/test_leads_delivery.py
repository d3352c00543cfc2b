"""No event lost, none applied twice: the leads worker under SIGKILL, and the broker under an outage."""
from __future__ import annotations

import threading
import time

import pytest

from tests.e2e.helpers import envelopes, marketing_event, produce
from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

TOTAL = 20_000


def _lead_count(stack) -> int:
    return stack.sql("select count(*) from leads")[0][0]


def _backlog(stack) -> int:
    return stack.sql("select count(*) from outbox where published_at is null")[0][0]


def test_no_loss_when_the_worker_is_killed_twice_mid_stream(leads_stack):
    stack = leads_stack
    produce(stack.bootstrap, stack.topic("marketing.leads.inbound.v1"), (marketing_event(i) for i in range(TOTAL)))

    kills = []
    for threshold in (TOTAL // 6, TOTAL // 2):
        wait_for(lambda t=threshold: _lead_count(stack) >= t, what=f"{threshold} leads")
        kills.append(_lead_count(stack))
        stack.worker.kill()  # SIGKILL: no flush, no offset commit, relay mid-batch
        assert not stack.worker.alive()
        stack.restart_worker()

    wait_for(lambda: _lead_count(stack) == TOTAL and _backlog(stack) == 0, timeout=300, what="all leads published")
    time.sleep(2)  # anything still being redelivered would show up now
    assert _lead_count(stack) == TOTAL
    assert all(TOTAL // 6 <= k < TOTAL for k in kills), kills  # both kills really were mid-stream
    external_ids = stack.sql("select count(distinct external_id) from leads")[0][0]
    assert external_ids == TOTAL

    created = [e for e in envelopes(read_topic(stack.bootstrap, stack.topic("crm.leads.v1"), timeout_ms=5000))
               if e["type"] == "lead.created"]
    distinct = {e["id"]: e for e in created}
    assert len(distinct) == TOTAL
    lead_ids = {row[0] for row in stack.sql("select id::text from leads")}
    assert {e["subject"] for e in distinct.values()} == lead_ids


def test_leads_are_accepted_during_a_kafka_outage_and_published_once_after(leads_stack, kafka):
    stack = leads_stack
    rep = stack.session("rep-1", "rep", teams=["team-a"])
    statuses, ids, stop = [], [], threading.Event()

    def client(n: int):
        i = 0
        while not stop.is_set():
            r = rep.post(f"{stack.base_url}/leads", json={"company": f"Outage Co {n}-{i}", "email": f"o{n}-{i}@x.cn"},
                         timeout=30)
            statuses.append(r.status_code)
            if r.status_code == 201:
                ids.append(r.json()["id"])
            i += 1
            time.sleep(0.05)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for c in clients:
        c.start()
    try:
        time.sleep(3)
        kafka.stop()
        down_since = time.monotonic()
        created_before_outage = len(ids)
        time.sleep(30)
        created_during_outage = len(ids) - created_before_outage
        kafka.start()
        outage = time.monotonic() - down_since
        time.sleep(3)
    finally:
        stop.set()
        for c in clients:
            c.join()

    assert outage >= 30
    assert created_during_outage > 100, "clients kept creating leads while the broker was down"
    assert set(statuses) == {201}, {s: statuses.count(s) for s in set(statuses)}
    wait_for(lambda: _backlog(stack) == 0, timeout=180, what="outbox drained after the outage")
    created = [e for e in envelopes(read_topic(stack.bootstrap, stack.topic("crm.leads.v1"), timeout_ms=5000))
               if e["type"] == "lead.created"]
    assert len(created) == len(ids), "every event published, none twice"
    assert sorted(e["subject"] for e in created) == sorted(ids)
