"""Issue 12 under concurrency, through the gateway on PostgreSQL with every process real: look-alike
deals from 16 writers, conversions racing a handover, and a leaver who keeps writing while being
deactivated and handed over."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections import Counter

import pytest

from tests.e2e.gateway_stack import PASSWORD, wait_replicated
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
    # A guard against the regression (p99 8.6 s before), with room for a loaded CI machine; the goal
    # itself (p99 < 2 s) is measured by `make bench BENCH_ARGS=look_alike`, not timed in a test.
    assert p99 < 4.0
    mine = set(created)
    wait_for(lambda: crm.sql("opportunities", "select count(*) from outbox where published_at is null")[0][0] == 0,
             timeout=60, what="the outbox relayed")
    announced, current = Counter(), {}
    for message in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{crm.topic_prefix}crm.opportunities.v1",
                              timeout_ms=3000):
        if dict(message.headers).get("type") == b"opportunity.collision_detected":
            subject = message.key.decode() if message.key else None
            if subject in mine:
                announced[subject] += 1
                data = json.loads(message.value)["data"]
                current[subject] = (set(data["current_ids"]), {m["opportunity_id"] for m in data["matches"]})
    assert announced and max(announced.values()) == 1  # one event per deal, not one per pair
    assert all(new <= now for now, new in current.values())  # it lists what the deal collides with now


def _new_rep(crm, team: str = "east") -> tuple[dict, object]:
    name = f"rep{_uid()}"
    user = crm.as_("admin").post(crm.api("/users"), json={"username": name, "password": PASSWORD, "name": name,
                                                          "role": "rep", "team_id": crm.teams[team]["id"]}).json()
    wait_replicated(crm, user["id"], service="leads")
    wait_replicated(crm, user["id"], service="opportunities")
    return user, crm.as_(name)


def _hand_over(crm, leaver: dict, heir: dict) -> dict:
    r = crm.as_("mgr-east").post(crm.api(f"/users/{leaver['id']}/handover"), json={"to_user_id": heir["id"]})
    assert r.status_code == 202, r.text
    return wait_for(lambda: (lambda h: h if h["status"] != "pending" else None)(
        crm.as_("mgr-east").get(crm.api(f"/handovers/{r.json()['handover_id']}")).json()), timeout=60,
        what="the handover answered")


def _left_with(crm, user_id: str) -> dict:
    """Open records still owned by someone, in every service."""
    return {
        "leads": crm.sql("leads", "select count(*) from leads where owner_id = %s and deleted_at is null "
                                  "and status in ('new', 'contacted', 'qualified')", user_id)[0][0],
        "opportunities": crm.sql("opportunities", "select count(*) from opportunities where owner_id = %s "
                                                  "and status = 'open' and deleted_at is null", user_id)[0][0],
        "accounts": crm.sql("opportunities", "select count(*) from accounts where owner_id = %s "
                                             "and deleted_at is null", user_id)[0][0],
    }


def test_conversions_racing_a_handover_leave_nothing_with_the_leaver(crm):
    heir = crm.users["amy"]
    for round_ in range(10):
        leaver, session = _new_rep(crm)
        leads = [session.post(crm.api("/leads"), json={"company": f"Race {round_} {i} {_uid()}"}).json()
                 for i in range(3)]
        # One conversion goes into an account of the leaver's, which the handover moves meanwhile.
        own_account = session.post(crm.api("/accounts"), json={"name": f"Leaver's {_uid()}"}).json()["id"]
        targets = {leads[0]["id"]: own_account}
        accepted = []

        def convert(lead=None, session=session, accepted=accepted, targets=targets) -> None:
            extra = {"account_id": targets[lead["id"]]} if lead["id"] in targets else {}
            r = session.post(crm.api(f"/leads/{lead['id']}/convert"), json={
                "opportunity_name": "race", "amount": "10.00", "expected_close_date": CLOSE, **extra})
            if r.status_code == 202:
                accepted.append((lead["id"], r.json()))

        threads = [threading.Thread(target=convert, kwargs={"lead": lead}) for lead in leads]
        for t in threads:
            t.start()
        done = _hand_over(crm, leaver, heir)
        # Handed over, then deactivated: what reached the services for the leaver in between moves too.
        admin = crm.as_("admin")
        etag = admin.get(crm.api(f"/users/{leaver['id']}")).headers["ETag"]
        assert admin.patch(crm.api(f"/users/{leaver['id']}"), json={"active": False},
                           headers={"If-Match": etag}).status_code == 200
        for t in threads:
            t.join()
        assert done["status"] == "completed"
        for lead_id, ids in accepted:
            # Every accepted conversion ends as the successor's opportunity, or (one into the leaver's
            # account that the handover moved first) as a lead back with the reason, the successor's.
            # It may pass through the leaver on the way: a conversion reaching opportunities after the
            # handover but before the deactivation is the (still active) leaver's until the
            # deactivation moves it.
            def settled(lead_id=lead_id, ids=ids):
                owner = crm.sql("opportunities", "select owner_id from opportunities where id = %s",
                                ids["opportunity_id"])
                if owner:
                    return "opportunity", owner[0][0]
                back = crm.sql("leads", "select owner_id from leads where id = %s and status <> 'converted' "
                                        "and conversion_error is not null", lead_id)
                return ("reopened", back[0][0]) if back else None

            try:
                wait_for(lambda settled=settled: (settled() or (None, None))[1] == heir["id"], timeout=30,
                         what=f"conversion of {lead_id} settled with the successor")
            except AssertionError as missed:
                raise AssertionError(f"{missed}; it is {settled()!r}, the leaver is {leaver['id']}") from None
        wait_for(lambda leaver=leaver: _left_with(crm, leaver["id"]) == {"leads": 0, "opportunities": 0,
                                                                         "accounts": 0},
                 timeout=30, what="nothing left with the leaver")


def test_a_leaver_who_keeps_writing_while_deactivated_and_handed_over_keeps_nothing(crm):
    heir = crm.users["amy"]
    leaver, session = _new_rep(crm)
    direct = {name: f"{crm.service_url(name)}/api/v1" for name in ("leads", "opportunities")}
    stop, refused_at = threading.Event(), {}

    def keep_writing(where: str, url: str, path: str, body) -> None:
        while not stop.is_set():
            r = session.post(f"{url}{path}", json=body(), timeout=10)
            if r.status_code == 401 and where not in refused_at:
                refused_at[where] = time.monotonic()
            time.sleep(0.02)

    writers = [threading.Thread(target=keep_writing, args=args) for args in (
        ("gateway leads", crm.api(""), "/leads", lambda: {"company": f"Gap {_uid()}"}),
        ("leads", direct["leads"], "/leads", lambda: {"company": f"Gap {_uid()}"}),
        ("opportunities", direct["opportunities"], "/accounts", lambda: {"name": f"Gap {_uid()}"}))]
    for w in writers:
        w.start()
    time.sleep(1.0)
    admin = crm.as_("admin")
    etag = admin.get(crm.api(f"/users/{leaver['id']}")).headers["ETag"]
    assert admin.patch(crm.api(f"/users/{leaver['id']}"), json={"active": False},
                       headers={"If-Match": etag}).status_code == 200
    deactivated = time.monotonic()
    done = _hand_over(crm, leaver, heir)
    wait_for(lambda: len(refused_at) == 3, timeout=10, what="every service refusing the leaver")
    stop.set()
    for w in writers:
        w.join()
    lags = {where: round(at - deactivated, 2) for where, at in refused_at.items()}
    print(f"leaver refused after deactivation: {lags}")
    assert done["status"] == "completed" and max(lags.values()) < 1.0
    wait_for(lambda: _left_with(crm, leaver["id"]) == {"leads": 0, "opportunities": 0, "accounts": 0},
             timeout=30, what="nothing left with the leaver")


def test_conversions_racing_the_deletion_of_their_account_end_as_a_deal_or_a_reopened_lead(crm):
    ann = crm.as_("ann")
    outcomes = Counter()
    for round_ in range(10):
        account = ann.post(crm.api("/accounts"), json={"name": f"Doomed {round_} {_uid()}"}).json()
        lead = ann.post(crm.api("/leads"), json={"company": f"Into doomed {_uid()}"}).json()
        answers = {}

        def convert(lead=lead, account=account, answers=answers) -> None:
            answers["convert"] = ann.post(crm.api(f"/leads/{lead['id']}/convert"), json={
                "opportunity_name": "race", "amount": "10.00", "expected_close_date": CLOSE,
                "account_id": account["id"]})

        def delete(account=account, answers=answers) -> None:
            answers["delete"] = ann.delete(crm.api(f"/accounts/{account['id']}"))

        threads = [threading.Thread(target=convert), threading.Thread(target=delete)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if answers["convert"].status_code != 202:
            continue
        ids = answers["convert"].json()

        def settled(lead=lead, ids=ids):
            if ann.get(crm.api(f"/opportunities/{ids['opportunity_id']}")).status_code == 200:
                return "opportunity"
            current = ann.get(crm.api(f"/leads/{lead['id']}")).json()
            return "reopened" if current["status"] != "converted" and current["conversion_error"] else None

        outcomes[wait_for(settled, timeout=30, what="the conversion settled")] += 1
    print(f"conversions racing the deletion of their account: {dict(outcomes)}")
    assert sum(outcomes.values()) >= 5
