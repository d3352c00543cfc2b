"""The gateway as operations sees it, with real processes: handover across services through Kafka,
directory events, a stopped service (503, circuit breaker, degraded customer view),
request ids, CORS and size limits."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from tests.e2e.gateway_stack import PASSWORD, wait_replicated
from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_directory_changes_are_published_without_secrets(crm, kafka):
    def all_relayed():
        found = read_topic(kafka.bootstrap, f"{crm.topic_prefix}crm.directory.v1", timeout_ms=1000)
        updated = [m for m in found if dict(m.headers)["type"] == b"team.updated"]
        return found if len(updated) == 2 else None

    messages = wait_for(all_relayed, what="directory events")
    events = [json.loads(m.value) for m in messages]
    ann = next(e for e in events if e["type"] == "user.created" and e["subject"] == crm.users["ann"]["id"])
    assert ann["data"]["user"] == {"id": crm.users["ann"]["id"], "username": "ann", "name": "Ann", "role": "rep",
                                   "team_id": crm.teams["east"]["id"], "region": None, "active": True,
                                   "token_version": 1}  # services refuse tokens of any other version
    assert "password" not in json.dumps(events)
    north = next(e for e in events if e["type"] == "team.created" and e["subject"] == crm.teams["north"]["id"])
    assert north["data"]["team"]["parent_team_id"] == crm.teams["east"]["id"]
    managed = [e for e in events if e["type"] == "team.updated" and e["subject"] == crm.teams["east"]["id"]]
    assert managed[-1]["data"]["team"]["manager_id"] == crm.users["mgr-east"]["id"]


def test_handover_moves_the_leavers_open_leads_and_reports_completion(crm):
    admin, ann, mgr_east = crm.as_("admin"), crm.as_("ann"), crm.as_("mgr-east")
    r = admin.post(crm.api("/users"), json={"username": f"leaving{uuid.uuid4().hex[:5]}", "password": "password-for-tests",
                                            "name": "Leaving Rep", "role": "rep", "team_id": crm.teams["east"]["id"]})
    leaver = r.json()
    wait_replicated(crm, leaver["id"], crm.users["ann"]["id"])
    leaving = crm.session(crm.token(leaver["username"]))
    ids = [leaving.post(crm.api("/leads"), json={"company": f"Handover {i} {uuid.uuid4().hex[:5]}"}).json()["id"]
           for i in range(3)]
    closed = leaving.post(crm.api("/leads"), json={"company": f"Closed {uuid.uuid4().hex[:5]}"}).json()
    leaving.patch(crm.api(f"/leads/{closed['id']}"), json={"status": "disqualified"}, headers={"If-Match": '"v1"'})

    r = mgr_east.post(crm.api(f"/users/{leaver['id']}/handover"), json={"to_user_id": crm.users["ann"]["id"]},
                      headers={"Idempotency-Key": "handover-1"})
    assert r.status_code == 202, r.text
    handover_id = r.json()["handover_id"]
    replay = mgr_east.post(crm.api(f"/users/{leaver['id']}/handover"), json={"to_user_id": crm.users["ann"]["id"]},
                           headers={"Idempotency-Key": "handover-1"})
    assert replay.json()["handover_id"] == handover_id  # the same handover, not a second one

    status = wait_for(lambda: (lambda h: h if h["status"] == "completed" else None)(
        mgr_east.get(crm.api(f"/handovers/{handover_id}")).json()), timeout=60, what="handover completed")
    assert status["services"]["leads"]["moved"] == 3 and status["waiting_for"] == []
    for lead_id in ids:
        lead = ann.get(crm.api(f"/leads/{lead_id}")).json()
        assert lead["owner_id"] == crm.users["ann"]["id"] and lead["team_id"] == crm.teams["east"]["id"]
    assert ann.get(crm.api(f"/leads/{closed['id']}")).status_code == 404  # a closed lead stays with its owner


def test_request_ids_are_returned_and_reach_the_service(crm):
    rid = f"trace-{uuid.uuid4().hex}"
    r = crm.as_("ann").get(crm.api("/leads"), headers={"X-Request-ID": rid})
    assert r.headers["X-Request-ID"] == rid
    wait_for(lambda: rid in (crm.state_dir / "logs" / "leads-api.log").read_text(), timeout=10,
             what="the request id in the leads service's log")
    made = crm.as_("ann").get(crm.api("/leads")).headers["X-Request-ID"]
    assert uuid.UUID(made)


def test_body_limits_and_json_only(crm):
    ann = crm.as_("ann")
    r = ann.post(crm.api("/leads"), data=b"{" + b" " * (1024 * 1024 + 10) + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.headers["Content-Type"] == "application/problem+json"
    r = ann.post(crm.api("/users"), data="username=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 403  # role first: a rep may not use the route at all
    r = crm.as_("admin").post(crm.api("/users"), data="username=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = crm.as_("admin").post(crm.api("/users"), data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_cors_preflight_and_headers(crm):
    origin = "https://crm.example.com"
    r = requests.options(crm.api("/leads"), headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization,content-type"},
                         timeout=10)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin
    r = crm.as_("ann").get(crm.api("/leads"), headers={"Origin": "https://evil.example.org"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_a_stopped_service_is_503_then_the_breaker_opens_and_recovers(crm):
    ann = crm.as_("ann")
    account = ann.post(crm.api("/accounts"), json={"name": f"Breaker Test {uuid.uuid4().hex[:6]}"}).json()
    view = ann.get(crm.api(f"/customers/{account['id']}"))
    assert view.status_code == 200, view.text
    assert view.json()["account"]["name"] == account["name"] and view.json()["leads"] == []
    assert view.json()["degraded"] == [] and view.json()["orders"] == [] and view.json()["notifications"] == []
    assert ann.get(crm.api(f"/customers/{uuid.uuid4()}")).status_code == 404  # no such account

    crm.stop("leads-api")
    try:
        first = ann.get(crm.api("/leads"))
        assert first.status_code == 503 and first.headers["Content-Type"] == "application/problem+json"
        assert int(first.headers["Retry-After"]) >= 1
        details = [ann.get(crm.api("/leads")).json()["detail"] for _ in range(8)]
        assert any("failing" in d for d in details), details  # the breaker opened: no more waiting on connects
        partial = ann.get(crm.api(f"/customers/{account['id']}"))
        assert partial.status_code == 200 and partial.json()["degraded"] == ["leads"]
        assert partial.json()["account"]["id"] == account["id"] and partial.json()["leads"] is None
        crm.stop("opportunities-api")
        try:
            # The orders service still answers for its part (the caller's visible orders: none here).
            left = ann.get(crm.api(f"/customers/{account['id']}"))
            assert left.status_code == 200 and left.json()["orders"] == [] and left.json()["account"] is None
            assert left.json()["degraded"] == ["leads", "opportunities"]
            crm.stop("orders-api")
            crm.stop("notifications-api")
            try:
                assert ann.get(crm.api(f"/customers/{account['id']}")).status_code == 503  # no part left to show
            finally:
                crm.start("orders-api")
                crm.start("notifications-api")
        finally:
            crm.start("opportunities-api")
        assert ann.get(crm.api("/me")).status_code == 200  # the gateway's own routes do not depend on it
    finally:
        crm.start("leads-api")
    time.sleep(2.5)  # the breaker's reset timeout in this stack
    wait_for(lambda: ann.get(crm.api("/leads")).status_code == 200, timeout=30, what="leads back through the gateway")
    wait_for(lambda: ann.get(crm.api(f"/accounts/{account['id']}")).status_code == 200, timeout=30,
             what="opportunities back through the gateway")


def test_the_merged_openapi_document_lists_gateway_and_service_routes(crm):
    doc = requests.get(f"{crm.url}/openapi.json", timeout=10).json()
    assert {"/api/v1/leads", "/api/v1/leads/{lead_id}", "/api/v1/users", "/api/v1/customers/{account_id}",
            "/api/v1/reports/funnel", "/api/v1/opportunities/{opp_id}/stage", "/api/v1/reports/forecast"} \
        <= set(doc["paths"])
    assert not doc.get("x-unavailable") and "/api/v1/orders/{order_id}/submit" in doc["paths"]
    assert {"/api/v1/notifications", "/api/v1/agenda", "/api/v1/notification-preferences"} <= set(doc["paths"])
    assert "Lead" in doc["components"]["schemas"] and "User" in doc["components"]["schemas"]
    assert "swagger-ui" in requests.get(f"{crm.url}/docs", timeout=10).text


def test_the_gateway_answers_only_its_own_routes(crm):
    """The Python gateway is an upstream behind the edge: asked directly for a service's route, it
    has none (it no longer forwards); through the edge the same request reaches the service."""
    token = crm.token("ann")
    headers = {"Authorization": f"Bearer {token}"}
    direct = requests.get(f"{crm.gateway_url}/api/v1/leads", headers=headers, timeout=10)
    assert direct.status_code == 404 and direct.headers["Content-Type"] == "application/problem+json"
    assert requests.post(f"{crm.gateway_url}/api/v1/leads", json={"company": "X"}, headers=headers,
                         timeout=10).status_code in (404, 405)
    assert requests.get(crm.api("/leads"), headers=headers, timeout=10).status_code == 200
    assert requests.get(f"{crm.gateway_url}/api/v1/me", headers=headers, timeout=10).status_code == 200


def test_failed_sign_ins_for_one_name_are_refused_through_the_edge_whatever_forwarded_for_says(crm):
    """Ten failures for a name from one address, then 429 with Retry-After, the right password
    included. The address is the one the edge saw: a client naming another in X-Forwarded-For (to
    get a fresh count each time) does not get one."""
    name = f"victim{uuid.uuid4().hex[:8]}"
    created = crm.as_("admin").post(crm.api("/users"), json={
        "username": name, "password": PASSWORD, "name": name, "role": "rep", "team_id": crm.teams["east"]["id"]})
    assert created.status_code == 201, created.text

    def attempt(password: str, i: int) -> requests.Response:
        return requests.post(crm.api("/auth/token"), json={"username": name, "password": password},
                             headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10)

    codes = [attempt("wrong-guess", i).status_code for i in range(11)]
    assert codes == [401] * 10 + [429]
    refused = attempt(PASSWORD, 99)
    assert refused.status_code == 429, refused.text
    assert refused.headers["Content-Type"] == "application/problem+json" and int(refused.headers["Retry-After"]) > 60
    assert "access_token" not in refused.json()
    # Another name from the same address is not affected.
    assert requests.post(crm.api("/auth/token"), json={"username": "ann", "password": PASSWORD},
                         timeout=10).status_code == 200
