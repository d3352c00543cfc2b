"""The leads service as deployed: gunicorn API + worker processes, PostgreSQL, Kafka, over HTTP."""
from __future__ import annotations

import pytest
import requests

from tests.e2e.helpers import envelopes, marketing_event, produce
from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_inbound_marketing_leads_become_leads_and_bad_ones_are_dead_lettered(leads_stack):
    stack = leads_stack
    good = [marketing_event(i) for i in range(25)]
    wrong_version = marketing_event(900)
    wrong_version["version"] = 2
    bad = [
        marketing_event(901, company=None, contact_name=None),
        marketing_event(902, email="not-an-email"),
        marketing_event(903, estimated_value="a lot"),
        wrong_version,
    ]
    produce(stack.bootstrap, stack.topic("marketing.leads.inbound.v1"), good + bad, raw=[b"\x00\x01garbage"])

    wait_for(lambda: stack.sql("select count(*) from leads")[0][0] == 25, what="25 leads")
    dlq = wait_for(lambda: (lambda m: m if len(m) == 5 else None)(
        read_topic(stack.bootstrap, stack.topic("marketing.leads.inbound.v1.dlq"), timeout_ms=1000)), what="5 DLQ")
    reasons = sorted(dict(m.headers)["error"].decode() for m in dlq)
    assert any("company" in r and "contact name" in r for r in reasons)
    assert any("email" in r for r in reasons)
    assert any("estimated_value" in r for r in reasons)
    assert any("unsupported version 2" in r for r in reasons)
    assert any(r.startswith("not JSON") for r in reasons)
    for m in dlq:
        headers = dict(m.headers)
        assert headers["original_topic"] == stack.topic("marketing.leads.inbound.v1").encode()
        assert {"error_type", "original_partition", "original_offset", "failed_at"} <= set(headers)

    marketing = stack.session("mk-1", "marketing")
    items = marketing.get(f"{stack.base_url}/leads?limit=200&source=marketing").json()["items"]
    assert len(items) == 25 and all(i["owner_id"] is None and i["campaign"] == "autumn-expo" for i in items)
    manager = stack.session("mgr", "manager", teams=["east"], manages=["east"])
    assert len(manager.get(f"{stack.base_url}/leads?limit=200").json()["items"]) == 25  # the unassigned queue
    rep = stack.session("rep-1", "rep", teams=["east"])
    assert rep.get(f"{stack.base_url}/leads").json()["items"] == []

    wait_for(lambda: stack.sql("select count(*) from outbox where published_at is null")[0][0] == 0)
    created = [e for e in envelopes(read_topic(stack.bootstrap, stack.topic("crm.leads.v1")))
               if e["type"] == "lead.created"]
    assert sorted(e["data"]["lead"]["external_id"] for e in created) == sorted(f"mk-{i}" for i in range(25))
    # The inbound event's correlation id carries through to the lead.created it caused.
    assert {e["correlation_id"] for e in created} == {e["correlation_id"] for e in good}

    inbound = stack.topic("marketing.leads.inbound.v1")
    lag_zero = (f'crm_consumer_lag{{group="{stack.topic_prefix}leads-marketing-inbound",service="leads",'
                f'topic="{inbound}"}} 0.0')
    metrics = wait_for(lambda: (lambda t: t if lag_zero in t else None)(  # lag is sampled every 10 s
        requests.get(f"http://127.0.0.1:{stack.worker_metrics_port}/metrics").text), timeout=40, what="lag 0")
    assert f'crm_events_consumed_total{{outcome="applied",service="leads",topic="{inbound}"}} 25.0' in metrics
    assert f'crm_events_dead_lettered_total{{service="leads",topic="{inbound}"}} 5.0' in metrics
    assert 'crm_outbox_backlog{service="leads"}' in metrics
    assert 'crm_outbox_publish_latency_seconds_count{service="leads"} 25.0' in metrics


def test_http_visibility_concurrency_and_errors_through_gunicorn(leads_stack):
    stack = leads_stack
    url = stack.base_url
    ann = stack.session("ann", "rep", teams=["east"])
    bob = stack.session("bob", "rep", teams=["west"])
    mgr = stack.session("mgr-e", "manager", teams=["east"], manages=["east"])

    r = ann.post(f"{url}/leads", json={"company": "华东机械有限公司", "contact_name": "王经理", "phone": "+86 21 5555 0101",
                                       "quoted_price": "128000", "currency": "CNY"}, headers={"X-Request-ID": "req-123"})
    assert r.status_code == 201 and r.headers["X-Request-ID"] == "req-123"
    event = wait_for(lambda: next((m for m in read_topic(stack.bootstrap, stack.topic("crm.leads.v1"), timeout_ms=500)
                                   if dict(m.headers)["type"] == b"lead.created"), None), what="lead.created")
    assert dict(event.headers)["X-Request-ID"] == b"req-123"  # request id → event header
    lead = r.json()
    assert lead["quoted_price"] == "128000.00" and r.headers["Location"].endswith(lead["id"])
    for method in ("get", "delete"):
        assert getattr(bob, method)(f"{url}/leads/{lead['id']}").status_code == 404
    assert bob.patch(f"{url}/leads/{lead['id']}", json={"status": "contacted"}, headers={"If-Match": r.headers["ETag"]}
                     ).status_code == 404
    assert bob.get(f"{url}/leads").json()["items"] == []
    assert [i["id"] for i in mgr.get(f"{url}/leads").json()["items"]] == [lead["id"]]

    ok = mgr.patch(f"{url}/leads/{lead['id']}", json={"status": "qualified"}, headers={"If-Match": r.headers["ETag"]})
    assert ok.status_code == 200
    assert ann.patch(f"{url}/leads/{lead['id']}", json={"status": "contacted"},
                     headers={"If-Match": r.headers["ETag"]}).status_code == 412

    for bad, status in [(dict(data="{", headers={"Content-Type": "application/json"}), 400),
                        (dict(json={"company": ["x"]}), 422),
                        (dict(data="x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}), 413),
                        (dict(data="<lead/>", headers={"Content-Type": "application/xml"}), 415)]:
        response = ann.post(f"{url}/leads", **bad)
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.headers["X-Request-ID"]
    assert requests.get(f"{url}/leads").status_code == 401

    health = requests.get(url.replace("/api/v1", "/readyz")).json()
    assert health == {"status": "ready", "checks": {"database": True, "kafka": True}}
    metrics = requests.get(url.replace("/api/v1", "/metrics")).text
    assert 'crm_http_requests_total{method="POST",route="/api/v1/leads",service="leads",status="201"}' in metrics
    assert 'crm_business_events_total{service="leads",type="lead.created"}' in metrics
