"""Through the gateway, with real processes: which role may use which route (every cell of the
matrix), that no rep reaches another team's records (BOLA), and which tokens are refused."""
from __future__ import annotations

import base64
import json
import uuid

import jwt
import pytest
import requests

from crmkit.auth import issue_token
from gateway.policy import RoutePolicy
from tests.infra import JWT_SECRET, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ALL = {"rep", "manager", "executive", "marketing", "service", "admin"}
LEAD_USERS = {"rep", "manager", "executive", "marketing", "admin"}
SELLERS = {"rep", "manager", "executive", "admin"}
DEAL_READERS = SELLERS | {"service"}
LEADERS = {"manager", "executive", "admin"}
RULE_READERS = {"manager", "executive", "marketing", "admin"}
ADMIN = {"admin"}
ID = str(uuid.uuid4())

# What CONTRACT §2 says each role may use, written out here independently of gateway/policy.toml so
# that a wrong policy fails the test. (method, path, roles allowed)
MATRIX = [
    ("GET", "/me", ALL),
    ("GET", "/users", ADMIN), ("POST", "/users", ADMIN),
    ("GET", f"/users/{ID}", ADMIN), ("PATCH", f"/users/{ID}", ADMIN),
    ("POST", f"/users/{ID}/handover", LEADERS), ("GET", f"/handovers/{ID}", LEADERS),
    ("GET", "/teams", ADMIN), ("POST", "/teams", ADMIN), ("GET", f"/teams/{ID}", ADMIN), ("PATCH", f"/teams/{ID}", ADMIN),
    ("GET", f"/customers/{ID}", DEAL_READERS),
    ("GET", "/reports/funnel", LEAD_USERS),
    # leads
    ("GET", "/leads", LEAD_USERS), ("POST", "/leads", LEAD_USERS), ("POST", "/leads/import", LEAD_USERS),
    ("GET", f"/leads/{ID}", LEAD_USERS), ("PATCH", f"/leads/{ID}", LEAD_USERS), ("DELETE", f"/leads/{ID}", LEAD_USERS),
    ("GET", f"/leads/{ID}/duplicate-claims", SELLERS),
    ("GET", f"/leads/{ID}/activities", LEAD_USERS), ("POST", f"/leads/{ID}/activities", LEAD_USERS),
    ("POST", f"/leads/{ID}/convert", LEAD_USERS), ("POST", f"/leads/{ID}/assign", LEADERS),
    ("GET", f"/lead-imports/{ID}", LEAD_USERS),
    ("GET", "/lead-scoring-rules", RULE_READERS), ("PUT", "/lead-scoring-rules", {"marketing", "admin"}),
    ("GET", "/lead-assignment-rules", RULE_READERS), ("PUT", "/lead-assignment-rules", ADMIN),
    ("GET", "/reports/lead-funnel", LEAD_USERS),
    # opportunities
    ("GET", "/accounts", DEAL_READERS), ("POST", "/accounts", SELLERS),
    ("GET", f"/accounts/{ID}", DEAL_READERS), ("PATCH", f"/accounts/{ID}", SELLERS), ("DELETE", f"/accounts/{ID}", SELLERS),
    ("GET", f"/accounts/{ID}/contacts", DEAL_READERS), ("POST", f"/accounts/{ID}/contacts", SELLERS),
    ("PUT", f"/accounts/{ID}/team", SELLERS),
    ("GET", f"/accounts/{ID}/activities", DEAL_READERS), ("POST", f"/accounts/{ID}/activities", DEAL_READERS),
    ("GET", "/contacts", DEAL_READERS), ("POST", "/contacts", SELLERS),
    ("GET", f"/contacts/{ID}", DEAL_READERS), ("PATCH", f"/contacts/{ID}", SELLERS), ("DELETE", f"/contacts/{ID}", SELLERS),
    ("GET", "/opportunities", DEAL_READERS), ("POST", "/opportunities", SELLERS),
    ("GET", f"/opportunities/{ID}", DEAL_READERS), ("PATCH", f"/opportunities/{ID}", SELLERS),
    ("DELETE", f"/opportunities/{ID}", SELLERS),
    ("POST", f"/opportunities/{ID}/stage", SELLERS), ("POST", f"/opportunities/{ID}/checklist/demo", SELLERS),
    ("POST", f"/opportunities/{ID}/win", SELLERS), ("POST", f"/opportunities/{ID}/lose", SELLERS),
    ("PUT", f"/opportunities/{ID}/team", SELLERS), ("GET", f"/opportunities/{ID}/collisions", SELLERS),
    ("POST", f"/opportunities/{ID}/collisions/{ID}/dismissal", LEADERS),
    ("GET", f"/opportunities/{ID}/activities", DEAL_READERS), ("POST", f"/opportunities/{ID}/activities", DEAL_READERS),
    ("GET", f"/opportunities/{ID}/expenses", SELLERS), ("POST", f"/opportunities/{ID}/expenses", SELLERS),
    ("GET", "/pipeline/stages", DEAL_READERS), ("PUT", "/pipeline/stages", ADMIN),
    ("GET", "/reports/pipeline", SELLERS), ("GET", "/reports/forecast", SELLERS),
    ("GET", "/reports/win-rate", SELLERS), ("GET", "/reports/sales-cycle", SELLERS),
    ("GET", "/reports/opportunity-funnel", LEAD_USERS),
    # the rep's day (issue 18)
    ("GET", "/visits", SELLERS), ("POST", "/visits", SELLERS), ("GET", f"/visits/{ID}", SELLERS),
    ("POST", f"/visits/{ID}/check-in", SELLERS), ("POST", f"/visits/{ID}/reschedule", SELLERS),
    ("POST", f"/visits/{ID}/miss", SELLERS),
    ("GET", "/daily-reports", SELLERS), ("GET", f"/daily-reports/{ID}", SELLERS),
    ("PATCH", f"/daily-reports/{ID}", SELLERS), ("POST", f"/daily-reports/{ID}/submit", SELLERS),
    ("POST", f"/daily-reports/{ID}/review", LEADERS),
    ("GET", "/reports/weekly-progress", SELLERS), ("GET", "/market-notes", SELLERS),
    # orders
    ("GET", "/products", DEAL_READERS), ("POST", "/products", ADMIN), ("POST", "/products/import", ADMIN),
    ("GET", f"/products/{ID}", DEAL_READERS), ("PATCH", f"/products/{ID}", ADMIN), ("DELETE", f"/products/{ID}", ADMIN),
    ("GET", "/orders", DEAL_READERS), ("POST", "/orders", SELLERS),
    ("GET", f"/orders/{ID}", DEAL_READERS), ("PATCH", f"/orders/{ID}", SELLERS), ("DELETE", f"/orders/{ID}", SELLERS),
    ("POST", f"/orders/{ID}/submit", SELLERS), ("POST", f"/orders/{ID}/fulfill", SELLERS),
    ("POST", f"/orders/{ID}/pay", SELLERS), ("POST", f"/orders/{ID}/cancel", SELLERS),
    ("POST", f"/orders/{ID}/duplicate", SELLERS), ("PUT", f"/orders/{ID}/payment-plan", SELLERS),
    ("GET", f"/orders/{ID}/payments", DEAL_READERS), ("GET", f"/orders/{ID}/history", DEAL_READERS),
    ("GET", "/order-types", DEAL_READERS), ("PUT", "/order-types", ADMIN),
    ("GET", "/house-accounts", LEADERS), ("PUT", f"/house-accounts/{ID}", ADMIN),
    ("GET", "/approval-policies", LEADERS), ("PUT", "/approval-policies", ADMIN),
    ("GET", "/approvals", SELLERS), ("GET", f"/approvals/{ID}", SELLERS),
    ("POST", f"/approvals/{ID}/decision", LEADERS),
    ("GET", "/targets", SELLERS), ("POST", "/targets", LEADERS),
    ("GET", f"/targets/{ID}", SELLERS), ("PATCH", f"/targets/{ID}", LEADERS),
    ("GET", "/performance", SELLERS), ("GET", "/performance/contributions", SELLERS),
    ("GET", "/kpi-schemes", SELLERS), ("PUT", "/kpi-schemes", {"executive", "admin"}),
    ("GET", "/performance/ranking", SELLERS), ("GET", "/commission", SELLERS),
    ("GET", "/commission-plans", SELLERS), ("PUT", "/commission-plans", {"executive", "admin"}),
    ("GET", "/alert-rules", SELLERS), ("PUT", "/alert-rules", {"executive", "admin"}),
    ("GET", "/reports/sales", LEADERS), ("GET", "/reports/collections", LEADERS),
    ("GET", "/reports/attainment", LEADERS),
    # notifications
    ("GET", "/notifications", ALL), ("POST", "/notifications/read-all", ALL), ("POST", f"/notifications/{ID}/read", ALL),
    ("GET", "/agenda", ALL), ("GET", "/notification-preferences", ALL), ("PUT", "/notification-preferences", ALL),
    ("GET", "/webhooks", ADMIN), ("POST", "/webhooks", ADMIN),
    ("GET", f"/webhooks/{ID}", ADMIN), ("DELETE", f"/webhooks/{ID}", ADMIN), ("POST", f"/webhooks/{ID}/rotate-secret", ADMIN),
]
USER_OF_ROLE = {"rep": "ann", "manager": "mgr-east", "executive": "exec", "marketing": "mkt", "service": "svc",
                "admin": "admin"}
RUNNING = {"gateway", "leads", "opportunities", "orders", "notifications"}


def test_the_matrix_covers_every_route_and_method_of_the_policy():
    policy = RoutePolicy.load()
    covered = {(method, policy.match(f"/api/v1{path}").path) for method, path, _ in MATRIX}
    declared = {(method, r.path) for r in policy.routes for method in r.allowed if not r.public}
    assert declared - covered == set(), "routes in the policy that the matrix does not check"


def test_role_by_route_matrix(crm):
    policy = RoutePolicy.load()
    sessions = {role: crm.as_(user) for role, user in USER_OF_ROLE.items()}
    failures = []
    for method, path, allowed in MATRIX:
        service = policy.match(f"/api/v1{path}").service
        for role, session in sessions.items():
            body = {} if method in ("POST", "PUT", "PATCH") else None
            r = session.request(method, crm.api(path), json=body, timeout=30)
            detail = r.json().get("detail", "") if r.headers.get("Content-Type", "").endswith("json") else ""
            if role not in allowed:
                ok = r.status_code == 403
            elif service in RUNNING:
                # Allowed: the request reached the route (a validation error or a missing record is fine).
                ok = r.status_code not in (403, 405) and not detail.startswith("no route") and r.status_code < 500
            else:
                ok = r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json"
            if not ok:
                failures.append(f"{role:<9} {method:<6} {path}: {r.status_code} {detail[:80]}")
    assert failures == [], "\n".join(failures)


def test_unknown_routes_and_methods(crm):
    admin = crm.as_("admin")
    assert admin.get(crm.api("/no-such-thing")).status_code == 404
    r = admin.delete(crm.api("/leads"))
    # The route's methods, with HEAD (wherever GET is) and OPTIONS, which every route answers.
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    assert admin.get(crm.api("/users/not-a-uuid")).status_code == 404
    assert requests.get(f"{crm.url}/nothing-here", timeout=10).status_code == 404


# ---- BOLA -------------------------------------------------------------------------------------------
def test_no_rep_reaches_another_teams_lead_or_its_sub_resources(crm):
    ann, bo, nora = crm.as_("ann"), crm.as_("bo"), crm.as_("nora")
    mgr_east, mgr_west = crm.as_("mgr-east"), crm.as_("mgr-west")
    lead = ann.post(crm.api("/leads"), json={"company": f"Secret {uuid.uuid4().hex[:6]}", "contact_name": "Zhao"}).json()
    nora_lead = nora.post(crm.api("/leads"), json={"company": f"North {uuid.uuid4().hex[:6]}", "contact_name": "Qian"}).json()
    upload = ann.post(crm.api("/leads/import"), files={"file": ("l.csv", b"company,contact_name\nImported,Sun\n")})
    assert upload.status_code == 202, upload.text
    job = upload.json()["job_id"]
    lid = lead["id"]

    for outsider in (bo, nora, mgr_west):
        assert outsider.get(crm.api(f"/leads/{lid}")).status_code == 404
        assert outsider.patch(crm.api(f"/leads/{lid}"), json={"company": "x"}, headers={"If-Match": '"v1"'}).status_code == 404
        assert outsider.get(crm.api(f"/leads/{lid}/activities")).status_code == 404
        assert outsider.post(crm.api(f"/leads/{lid}/activities"),
                             json={"kind": "call", "summary": "sneaky"}).status_code == 404
        assert outsider.post(crm.api(f"/leads/{lid}/convert"), json={
            "opportunity_name": "x", "amount": "1.00", "expected_close_date": "2026-12-31"}).status_code == 404
        assert outsider.get(crm.api(f"/lead-imports/{job}")).status_code == 404
        assert outsider.delete(crm.api(f"/leads/{lid}")).status_code == 404
        listed = outsider.get(crm.api("/leads"), params={"limit": 200}).json()["items"]
        assert lid not in {x["id"] for x in listed}
    assert mgr_west.post(crm.api(f"/leads/{lid}/assign"), json={"user_id": crm.users["bo"]["id"]}).status_code == 404
    # The manager of east manages north too (sub-teams), and sees both leads.
    assert mgr_east.get(crm.api(f"/leads/{lid}")).status_code == 200
    assert mgr_east.get(crm.api(f"/leads/{nora_lead['id']}")).status_code == 200
    assert ann.get(crm.api(f"/leads/{nora_lead['id']}")).status_code == 404
    assert ann.get(crm.api(f"/leads/{lid}")).status_code == 200  # and the lead still exists


def test_reports_count_only_what_the_caller_may_see(crm):
    amy, bo = crm.as_("amy"), crm.as_("bo")
    before_bo = bo.get(crm.api("/reports/funnel")).json()
    before_direct = bo.get(crm.api("/reports/lead-funnel")).json()
    for i in range(3):
        assert amy.post(crm.api("/leads"), json={"company": f"Amy's {i} {uuid.uuid4().hex[:6]}"}).status_code == 201
    after_bo = bo.get(crm.api("/reports/funnel")).json()
    assert after_bo["leads"] == before_bo["leads"]
    assert bo.get(crm.api("/reports/lead-funnel")).json()["leads"] == before_direct["leads"]
    amy_funnel = amy.get(crm.api("/reports/funnel")).json()
    assert amy_funnel["leads"] >= 3 and amy_funnel["degraded"] == [] and amy_funnel["opportunities"] is not None


def test_handovers_are_visible_to_the_leavers_managers_only(crm):
    mgr_east, mgr_west, executive = crm.as_("mgr-east"), crm.as_("mgr-west"), crm.as_("exec")
    # A manager cannot hand over someone outside their teams: that user is "not found" for them.
    r = mgr_west.post(crm.api(f"/users/{crm.users['amy']['id']}/handover"), json={"to_user_id": crm.users["bo"]["id"]})
    assert r.status_code == 404
    r = mgr_east.post(crm.api(f"/users/{crm.users['nora']['id']}/handover"), json={"to_user_id": crm.users["amy"]["id"]})
    assert r.status_code == 202, r.text
    handover = r.json()["handover_id"]
    assert mgr_west.get(crm.api(f"/handovers/{handover}")).status_code == 404
    assert mgr_east.get(crm.api(f"/handovers/{handover}")).status_code == 200
    assert executive.get(crm.api(f"/handovers/{handover}")).status_code == 200


# ---- tokens -----------------------------------------------------------------------------------------
def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _forged_tokens(crm) -> dict[str, str]:
    user = crm.users["ann"]
    claims = {"user_id": user["id"], "role": "rep", "name": "Ann", "teams": [user["team_id"]], "extra": {"ver": 1}}
    valid = crm.token("ann")
    header, payload, signature = valid.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["role"] = "admin"
    now = jwt.decode(valid, options={"verify_signature": False})
    return {
        "expired": issue_token(secret=JWT_SECRET, ttl_seconds=-120, **claims),
        "wrong signature": issue_token(secret="another-secret-that-is-long-enough-0123456789", **claims),
        "wrong issuer": issue_token(secret=JWT_SECRET, issuer="someone-else", **claims),
        "wrong audience": issue_token(secret=JWT_SECRET, audience="another-api", **claims),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**now, 'role': 'admin'})}.",
        "tampered claims": f"{header}.{_b64(tampered)}.{signature}",
        "garbage": "not.a.token",
        "no ver claim": issue_token(secret=JWT_SECRET, **{**claims, "extra": {}}),
        "unknown user": issue_token(secret=JWT_SECRET, **{**claims, "user_id": str(uuid.uuid4())}),
    }


def test_bad_tokens_are_refused_by_the_gateway(crm):
    for name, token in _forged_tokens(crm).items():
        r = crm.session(token).get(crm.api("/leads"))
        assert r.status_code == 401, f"{name}: {r.status_code}"
        assert r.headers["Content-Type"] == "application/problem+json"
        assert "Bearer" in r.headers["WWW-Authenticate"]
    assert requests.get(crm.api("/leads"), timeout=10).status_code == 401


def test_a_service_called_directly_without_a_valid_token_is_401(crm):
    assert requests.get(f"{crm.leads_url}/api/v1/leads", timeout=10).status_code == 401
    forged = _forged_tokens(crm)
    for name in ("expired", "wrong signature", "wrong issuer", "alg none", "tampered claims"):
        r = requests.get(f"{crm.leads_url}/api/v1/leads", headers={"Authorization": f"Bearer {forged[name]}"}, timeout=10)
        assert r.status_code == 401, name


def test_wrong_credentials_are_401(crm):
    for body in ({"username": "ann", "password": "wrong-password"}, {"username": "nobody", "password": "whatever1"}):
        r = requests.post(crm.api("/auth/token"), json=body, timeout=10)
        assert r.status_code == 401 and r.headers["Content-Type"] == "application/problem+json"
    assert requests.post(crm.api("/auth/token"), json={"username": "ann"}, timeout=10).status_code == 422


def test_a_deactivated_user_is_refused_at_once(crm):
    admin = crm.as_("admin")
    r = admin.post(crm.api("/users"), json={"username": f"leaver{uuid.uuid4().hex[:6]}", "password": "password-for-tests",
                                            "name": "Leaver", "role": "rep", "team_id": crm.teams["west"]["id"]})
    leaver = r.json()
    token = crm.token(leaver["username"])
    assert crm.session(token).get(crm.api("/leads")).status_code == 200
    r = admin.patch(crm.api(f"/users/{leaver['id']}"), json={"active": False}, headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 200 and r.json()["active"] is False
    # The gateway process that made the change forgets the user at commit, the other processes on
    # PostgreSQL's NOTIFY a few milliseconds later; a second is a generous bound.
    wait_for(lambda: all(crm.session(token).get(crm.api("/leads")).status_code == 401 for _ in range(4)), timeout=1,
             interval=0.05, what="the deactivated user's token refused by every gateway process")
    assert crm.session(token).get(crm.api("/me")).status_code == 401
    # Bypassing the gateway gains nothing: the service learns it from crm.directory.v1 (its replica).
    wait_for(lambda: requests.get(f"{crm.leads_url}/api/v1/leads", headers={"Authorization": f"Bearer {token}"},
                                  timeout=10).status_code == 401, timeout=30, what="the leads service refusing the token")
    r = requests.post(crm.api("/auth/token"), json={"username": leaver["username"], "password": "password-for-tests"},
                      timeout=10)
    assert r.status_code == 401
