"""The lead life as deployed (gunicorn API + worker processes, PostgreSQL, Kafka)."""
from __future__ import annotations

import io
import time

import pytest

from crmkit.events import new_event
from tests.e2e.helpers import envelopes, marketing_event, produce
from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
IMPORT_ROWS = 100_000


def _directory(stack, *users):
    events = [new_event("user.created", u, {"user": {"id": u, "name": u, "role": "rep", "team_id": team,
                                                     "region": "east", "active": True}}, source="gateway")
              for u, team in users]
    produce(stack.bootstrap, stack.topic("crm.directory.v1"), events)
    wait_for(lambda: stack.sql("select count(*) from directory_users")[0][0] == len(users), what="directory replica")


def test_a_100k_row_import_survives_a_killed_worker(leads_stack):
    stack = leads_stack
    lines = ["company,contact_name,email,phone,region,source,quoted_price"]
    bad_rows = []
    for i in range(IMPORT_ROWS):
        if i % 100 == 7:  # 1% bad: an email that is not one
            lines.append(f"Bad {i} Co,Person {i},not-an-email-{i},,east,web,")
            bad_rows.append(i + 2)  # line numbers: the header is line 1
        else:
            lines.append(f"Company {i} Ltd.,Person {i},p{i}@example.com,,east,web,{i}.50")
    content = ("\n".join(lines) + "\n").encode()
    mk = stack.session("mk", "marketing")
    r = mk.post(f"{stack.base_url}/leads/import", files={"file": ("big.csv", io.BytesIO(content), "text/csv")})
    assert r.status_code == 202, r.text
    job_url = f"{stack.base_url}/lead-imports/{r.json()['job_id']}"

    wait_for(lambda: mk.get(job_url).json()["rows_done"] >= 20_000, timeout=300, what="a fifth imported")
    stack.worker.kill()
    done_at_kill = mk.get(job_url).json()["rows_done"]
    assert done_at_kill < IMPORT_ROWS
    stack.restart_worker()
    job = wait_for(lambda: (lambda j: j if j["status"] == "completed" else None)(mk.get(job_url).json()),
                   timeout=900, interval=2, what="import completed")

    assert (job["rows"], job["created"], job["merged"], job["rejected"]) == (IMPORT_ROWS, 99_000, 0, 1_000)
    assert job["error_count"] == 1_000
    assert [e["row"] for e in job["errors"]] == bad_rows  # every bad row, by line number
    assert all("email" in e["errors"] for e in job["errors"])
    # Nothing twice, nothing half: exactly the good rows are leads.
    assert stack.sql("select count(*), count(distinct email) from leads") == [(99_000, 99_000)]


def test_conversion_through_kafka_and_handover(leads_stack):
    stack = leads_stack
    _directory(stack, ("leaver", "east"), ("heir", "east"))
    leaver = stack.session("leaver", "rep", teams=["east"])
    url = stack.base_url
    lead = leaver.post(f"{url}/leads", json={"company": "转换测试有限公司", "contact_name": "刘洋"}).json()
    kept = [leaver.post(f"{url}/leads", json={"company": f"Open {i}"}).json()["id"] for i in range(3)]
    body = {"opportunity_name": "首台设备", "amount": "560000", "expected_close_date": "2026-12-20"}
    r = leaver.post(f"{url}/leads/{lead['id']}/convert", json=body)
    assert r.status_code == 202
    ids = r.json()
    assert leaver.post(f"{url}/leads/{lead['id']}/convert", json=body).status_code == 409

    def converted():
        return [e for e in envelopes(read_topic(stack.bootstrap, stack.topic("crm.leads.v1"), timeout_ms=500))
                if e["type"] == "lead.converted"]
    [event] = wait_for(converted, what="lead.converted on the topic")
    assert event["subject"] == lead["id"]
    assert {k: event["data"][k.split("_")[0]]["id"] for k in ids} == ids

    produce(stack.bootstrap, stack.topic("crm.directory.v1"), [new_event(
        "handover.requested", "ho-1", {"handover_id": "ho-1", "from_user_id": "leaver", "to_user_id": "heir"},
        source="gateway")])

    def completed():
        return [e for e in envelopes(read_topic(stack.bootstrap, stack.topic("crm.leads.v1"), timeout_ms=500))
                if e["type"] == "handover.completed"]
    [done] = wait_for(completed, what="handover.completed")
    assert done["data"]["moved"] == 3 and done["subject"] == "ho-1"
    heir = stack.session("heir", "rep", teams=["east"])
    assert sorted(i["id"] for i in heir.get(f"{url}/leads").json()["items"]) == sorted(kept)


def test_marketing_pipeline_dedupes_scores_and_assigns(leads_stack):
    stack = leads_stack
    _directory(stack, ("r1", "east"), ("r2", "east"))
    admin = stack.session("admin", "admin")
    rules_url = f"{stack.base_url}/lead-assignment-rules"
    etag = admin.get(rules_url).headers["ETag"]
    assert admin.put(rules_url, json={"rules": [{"name": "east", "match": {"region": "east"},
                                                 "assign_to": {"team_id": "east"}}]},
                     headers={"If-Match": etag}).status_code == 200
    unique = [marketing_event(i) for i in range(900)]
    repeats = [marketing_event(i, email=f"C{i}@EXAMPLE.com", phone=None, external_id=f"again-{i}",
                               interest="asked again") for i in range(0, 900, 9)]  # 100 duplicates
    produce(stack.bootstrap, stack.topic("marketing.leads.inbound.v1"), unique + repeats)
    wait_for(lambda: stack.sql("select sum(touches) from leads")[0][0] == 1000, timeout=120, what="all applied")
    time.sleep(1)
    assert stack.sql("select count(*) from leads")[0][0] == 900
    assert stack.sql("select owner_id, count(*) from leads group by owner_id order by owner_id") == [
        ("r1", 450), ("r2", 450)]
    # Repeats are keyed by their own external id, so some arrive before their original on another
    # partition; either way one lead per prospect, two touches, and the first one's fields kept.
    assert stack.sql("select count(*) from leads where touches = 2")[0][0] == 100
    assert stack.sql("select count(*) from leads where interest not in ('CNC lathes', 'asked again')")[0][0] == 0
    # email 10 + phone 10 + interest 10 + value over 20,000 10, and "came back" 10 for two touches;
    # a merge fills a missing phone and rescores.
    assert stack.sql("select touches, min(score), max(score) from leads group by touches order by touches") == [
        (1, 40, 40), (2, 50, 50)]
