"""Idempotent retries under concurrency on the embedded default (SQLite), through the gateway
(issue 12): writers with their own Idempotency-Keys never see a 5xx, an unrelated reader never sees
an error, and requests sharing one key make one record and all end with its first response. The stack
is also where the orders story runs on SQLite (one stack started, not two)."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

pytestmark = [pytest.mark.kafka]
WRITERS, SECONDS = 16, 30


@pytest.fixture(scope="module")
def crm(kafka, postgres, tmp_path_factory):
    from tests.e2e.gateway_stack import start_crm, stop_crm

    stack = start_crm(kafka, postgres, tmp_path_factory.mktemp("crm-sqlite"), db="sqlite")
    try:
        yield stack
    finally:
        stop_crm(stack, postgres)


def test_sixteen_writers_with_their_own_keys_never_see_a_5xx_and_a_reader_never_an_error(crm):
    tokens = {name: crm.token(name) for name in ("ann", "amy", "bo", "nora")}
    writers = list(tokens)
    statuses: Counter = Counter()
    reads: Counter = Counter()
    created: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def write(i: int) -> None:
        session = crm.session(tokens[writers[i % len(writers)]])
        while time.monotonic() < deadline:
            key = str(uuid.uuid4())
            body = {"company": f"Burst {i} {key[:8]}", "email": f"{key}@burst.cn"}
            r = session.post(crm.api("/leads"), json=body, headers={"Idempotency-Key": key}, timeout=30)
            replay = None
            if r.status_code == 201 and i % 4 == 0:  # some writers retry as a client whose answer was lost
                replay = session.post(crm.api("/leads"), json=body, headers={"Idempotency-Key": key}, timeout=30)
            with lock:
                statuses[r.status_code] += 1
                if r.status_code == 201:
                    created.append(r.json()["id"])
                if replay is not None:
                    statuses[f"replay {replay.status_code} {replay.content == r.content}"] += 1

    def read() -> None:
        session = crm.session(crm.token("mgr-west"))
        while time.monotonic() < deadline:
            reads[session.get(crm.api("/leads"), params={"limit": 20}, timeout=30).status_code] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{WRITERS} writers for {SECONDS}s on SQLite through the gateway: {dict(statuses)}; reader {dict(reads)}")
    assert set(statuses) <= {201, "replay 201 True"} and statuses[201] > 100
    assert set(reads) == {200}
    assert len(set(created)) == len(created) == statuses[201]


def test_eight_requests_sharing_one_key_make_one_record_and_all_end_with_its_response(crm):
    session_token = crm.token("ann")
    key, company = str(uuid.uuid4()), f"Shared Key Co {uuid.uuid4().hex[:8]}"
    results, barrier = [], threading.Barrier(8)

    def send() -> None:
        session = crm.session(session_token)
        barrier.wait()
        answers = []
        for _ in range(10):
            r = session.post(crm.api("/leads"), json={"company": company}, headers={"Idempotency-Key": key},
                             timeout=30)
            answers.append(r)
            if r.status_code != 409:
                break
            assert "in progress" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
            time.sleep(0.2)
        results.append(answers)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finals = [answers[-1] for answers in results]
    assert all(r.status_code == 201 for r in finals), [r.status_code for r in finals]
    assert len({r.json()["id"] for r in finals}) == 1 and len({r.content for r in finals}) == 1
    mine = crm.session(session_token).get(crm.api("/leads"), params={"q": company}).json()["items"]
    assert [lead["company"] for lead in mine] == [company]


def test_the_order_story_runs_on_the_embedded_default(crm):
    """Issue 15's story (tests/e2e/test_orders_e2e.py) on SQLite, as `make run` stores it."""
    from tests.e2e.test_orders_e2e import order_story

    order_story(crm)
