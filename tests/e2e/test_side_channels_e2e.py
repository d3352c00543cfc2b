"""Issue 11's attacks against the running CRM: each one through the gateway and straight at the
service it targets (CONTRACT §2: bypassing the gateway gains nothing). Real processes: gunicorn
APIs, workers, Kafka and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid

import jwt
import pytest
import requests

from crmkit.auth import issue_token
from tests.e2e.gateway_stack import wait_replicated
from tests.infra import JWT_SECRET, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
CLOSE = dt.date.today() + dt.timedelta(days=45)


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _both(crm, service: str, session: requests.Session):
    """The same caller through the gateway and straight at the service: (name, base URL)."""
    return [("gateway", crm.api("")), (service, f"{crm.service_url(service)}/api/v1")]


def _deal(crm, session, account_name: str, *, region: str, skus, amount="480000.00") -> dict:
    account = session.post(crm.api("/accounts"), json={"name": account_name, "region": region}).json()
    r = session.post(crm.api("/opportunities"), json={
        "account_id": account["id"], "name": f"Deal {_uid()}", "amount": amount, "expected_close_date": CLOSE.isoformat(),
        "region": region, "products": [{"sku": s, "qty": 1, "unit_price": amount} for s in skus]})
    assert r.status_code == 201, r.text
    return r.json()


def _patch(session, url: str, changes: dict) -> dict:
    etag = session.get(url).headers["ETag"]
    r = session.patch(url, json=changes, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    return r.json()


# ---- 1. the collision oracle ----------------------------------------------------------------------------
def test_bo_learns_who_chases_the_colliding_deal_and_nothing_else_whatever_he_edits(crm):
    ann, bo = crm.as_("ann"), crm.as_("bo")
    region, skus = f"华东-{_uid()}", (f"SW-{_uid()}", f"AP-{_uid()}")
    hidden = _deal(crm, ann, "华东智联系统集成有限公司", region=region, skus=skus)
    mine = _deal(crm, bo, "上海博远信息系统集成有限公司", region=region, skus=skus, amount="500000.00")
    expected = [{"opportunity_id": hidden["id"], "owner_id": crm.users["ann"]["id"],
                 "manager_id": crm.users["mgr-east"]["id"], "visible": False}]
    seen = set()
    probes = [{"amount": a} for a in ("470000.00", "479500.00", "480000.00", "1.00")]
    probes += [{"expected_close_date": (CLOSE + dt.timedelta(days=d)).isoformat()} for d in (-59, 0, 59, 61)]
    probes += [{"products": [{"sku": s, "qty": 1, "unit_price": "1.00"} for s in chosen]}
               for chosen in (skus[:1], ("NONE",), skus)]
    for probe in probes:
        _patch(bo, crm.api(f"/opportunities/{mine['id']}"), probe)
        for _, base in _both(crm, "opportunities", bo):
            seen.add(json.dumps(bo.get(f"{base}/opportunities/{mine['id']}/collisions").json()["items"]))
    for name in ("华东", "华东智联", "华东智联系统集成有限公司"):
        _patch(bo, crm.api(f"/accounts/{mine['account_id']}"), {"name": name})
        time.sleep(0.7)  # the worker re-detects after a rename
        seen.add(json.dumps(bo.get(crm.api(f"/opportunities/{mine['id']}/collisions")).json()["items"]))
    assert [json.loads(s) for s in seen] == [expected]


# ---- 2. dedupe writes nothing into another team's lead ----------------------------------------------------
def test_bos_duplicate_of_anns_lead_is_a_claim_through_the_gateway_and_directly(crm):
    ann, bo = crm.as_("ann"), crm.as_("bo")
    email = f"buyer.{_uid()}@prospect.cn"
    lead = ann.post(crm.api("/leads"), json={"company": f"Prospect {_uid()}", "email": email}).json()
    before = ann.get(crm.api(f"/leads/{lead['id']}")).json()
    for where, base in _both(crm, "leads", bo):
        r = bo.post(f"{base}/leads", json={"company": "anything", "email": email.upper(), "industry": f"by {where}",
                                            "interest": "bo's notes", "quoted_price": "1.00"})
        assert r.status_code == 200 and r.json()["claimed"] is True and r.json()["merged"] is False, r.text
        assert r.json()["owner_id"] == crm.users["ann"]["id"] and set(r.json()) == {
            "id", "merged", "claimed", "owned_elsewhere", "claim_id", "owner_id", "manager_id"}
    assert ann.get(crm.api(f"/leads/{lead['id']}")).json() == before
    claims = ann.get(crm.api(f"/leads/{lead['id']}/duplicate-claims")).json()["items"]
    # One claim per person, brought up to date: a flood of duplicates is one row, not thousands.
    assert [(c["claimed_by"], c["brought"]["industry"]) for c in claims] == [(crm.users["bo"]["id"], "by leads")]
    assert bo.get(crm.api(f"/leads/{lead['id']}/duplicate-claims")).status_code == 404


# ---- 3. marketing and money -------------------------------------------------------------------------------
def test_marketing_cannot_write_a_ladder_of_rules_on_money(crm):
    mkt = crm.as_("mkt")
    current = mkt.get(crm.api("/lead-scoring-rules"))
    ladder = current.json()["rules"] + [{"name": f"ev>={v}", "field": "estimated_value", "op": "gte", "value": v,
                                         "points": 0} for v in (1000, 50000)]
    for _, base in _both(crm, "leads", mkt):
        r = mkt.put(f"{base}/lead-scoring-rules", json={"rules": ladder}, headers={"If-Match": current.headers["ETag"]})
        assert r.status_code == 403 and r.headers["Content-Type"] == "application/problem+json"
    lead = crm.as_("ann").post(crm.api("/leads"), json={"company": f"Rich {_uid()}", "estimated_value": "150000"}).json()
    seen = mkt.get(crm.api(f"/leads/{lead['id']}")).json()
    assert "estimated_value" not in seen
    assert all(r["field"] not in ("estimated_value", "quoted_price") for r in seen["score_reasons"])
    assert seen["score"] < lead["score"]


# ---- 5. the squat deal ------------------------------------------------------------------------------------
def test_a_virtual_team_member_cannot_squat_the_account_with_a_deal_of_his_own(crm):
    ann, bo = crm.as_("ann"), crm.as_("bo")
    account = ann.post(crm.api("/accounts"), json={"name": f"Team Customer {_uid()}"}).json()
    ann.put(crm.api(f"/accounts/{account['id']}/team"), json={"members": [{"user_id": crm.users["bo"]["id"],
                                                                           "role": "tech"}]})
    for _, base in _both(crm, "opportunities", bo):
        r = bo.post(f"{base}/opportunities", json={"account_id": account["id"], "name": "mine", "amount": "1.00"})
        assert r.status_code == 403, r.text
    ann.put(crm.api(f"/accounts/{account['id']}/team"), json={"members": []})
    assert bo.get(crm.api(f"/accounts/{account['id']}")).status_code == 404
    assert bo.get(crm.api(f"/customers/{account['id']}")).status_code == 404


# ---- 6. tokens the directory contradicts ------------------------------------------------------------------
def _forge(crm, user: str, role: str, **claims) -> requests.Session:
    return crm.session(issue_token(secret=JWT_SECRET, user_id=user, role=role, **claims))


def _version(crm, name: str) -> int:
    """The user's current token version, as the gateway puts it in their tokens."""
    return jwt.decode(crm.token(name), options={"verify_signature": False})["ver"]


def test_revoked_inflated_promoted_and_ghost_tokens_are_refused_everywhere(crm):
    admin = crm.as_("admin")
    name = f"leaver{_uid()}"
    made = admin.post(crm.api("/users"), json={"username": name, "password": "first-password-123", "name": name,
                                               "role": "rep", "team_id": crm.teams["west"]["id"]}).json()
    old = crm.session(crm.token(name, "first-password-123"))
    assert old.get(crm.api("/leads")).status_code == 200
    for service, path in (("leads", "/leads"), ("opportunities", "/opportunities")):
        url = f"{crm.service_url(service)}/api/v1{path}"
        wait_for(lambda url=url: old.get(url).status_code == 200, timeout=15, what=f"{service} knowing the user")
    current = admin.get(crm.api(f"/users/{made['id']}"))
    assert admin.patch(crm.api(f"/users/{made['id']}"), json={"password": "second-password-456"},
                       headers={"If-Match": current.headers["ETag"]}).status_code == 200
    # Through the edge a service route is the service's to refuse, from its directory replica: within
    # the replica's refresh (0.5 s), not synchronously as the gateway's own routes are.
    wait_for(lambda: old.get(crm.api("/leads")).status_code == 401, timeout=5, what="the old token refused")
    assert old.get(crm.api("/me")).status_code == 401  # the gateway's own routes: at once
    for service, path in (("leads", "/leads"), ("opportunities", "/opportunities")):
        url = f"{crm.service_url(service)}/api/v1{path}"
        wait_for(lambda url=url: old.get(url).status_code == 401, timeout=5, what=f"{service} refusing the old token")
    assert old.post(f"{crm.service_url('leads')}/api/v1/leads", json={"company": "after reset"}).status_code == 401

    west_lead = crm.as_("bo").post(crm.api("/leads"), json={"company": f"West {_uid()}"}).json()
    east = crm.users["mgr-east"]
    base = {"teams": [east["team_id"]], "extra": {"ver": _version(crm, "mgr-east")}}
    east_teams = sorted([crm.teams["east"]["id"], crm.teams["north"]["id"]])
    inflated = _forge(crm, east["id"], "manager", manages=[*east_teams, crm.teams["west"]["id"]], **base)
    # Through the edge and straight at the service alike: the claims are compared with the replica.
    assert inflated.get(crm.api("/leads")).status_code == 401
    direct = inflated.get(f"{crm.service_url('leads')}/api/v1/leads/{west_lead['id']}")
    assert direct.status_code == 401
    promoted = _forge(crm, crm.users["bo"]["id"], "admin", extra={"ver": _version(crm, "bo")})
    assert promoted.get(crm.api("/users")).status_code == 401
    ghost = _forge(crm, str(uuid.uuid4()), "executive", extra={"ver": 1})
    assert ghost.get(crm.api("/leads")).status_code == 401
    for service in ("leads", "opportunities"):
        path = "/leads" if service == "leads" else "/opportunities"
        assert ghost.get(f"{crm.service_url(service)}/api/v1{path}").status_code == 401
        assert promoted.get(f"{crm.service_url(service)}/api/v1{path}").status_code == 401


# ---- 7. converting into someone else's account --------------------------------------------------------------
def test_a_conversion_into_another_teams_or_an_invented_account_is_rolled_back_with_the_reason(crm):
    ann, bo = crm.as_("ann"), crm.as_("bo")
    wait_replicated(crm, crm.users["ann"]["id"], crm.users["bo"]["id"], service="opportunities")
    theirs = bo.post(crm.api("/accounts"), json={"name": f"Bo's customer {_uid()}"}).json()["id"]
    for target in (theirs, str(uuid.uuid4())):
        lead = ann.post(crm.api("/leads"), json={"company": f"Convert {_uid()}"}).json()
        r = ann.post(crm.api(f"/leads/{lead['id']}/convert"), json={
            "opportunity_name": "x", "amount": "10.00", "expected_close_date": CLOSE.isoformat(), "account_id": target})
        assert r.status_code == 202
        ids = r.json()
        back = wait_for(lambda lead=lead: (lambda j: j if j["status"] != "converted" else None)(
            ann.get(crm.api(f"/leads/{lead['id']}")).json()), timeout=30, what="the lead rolled back")
        assert back["opportunity_id"] is None and back["account_id"] is None and back["conversion_error"]
        assert ann.get(crm.api(f"/opportunities/{ids['opportunity_id']}")).status_code == 404
    assert crm.as_("exec").get(crm.api(f"/accounts/{target}")).status_code == 404  # never created under that id


# ---- 8. a rename with 200 deals ---------------------------------------------------------------------------
def test_renaming_an_account_with_200_deals_does_not_stall_other_writers(crm):
    ann, bo = crm.as_("ann"), crm.as_("bo")
    account = ann.post(crm.api("/accounts"), json={"name": f"Big {_uid()}", "region": "华东"}).json()
    for i in range(200):
        assert ann.post(crm.api("/opportunities"), json={
            "account_id": account["id"], "name": f"site {i}", "amount": "1000.00",
            "expected_close_date": CLOSE.isoformat(), "products": [{"sku": "SW-1", "qty": 1, "unit_price": "1000.00"},
                                                                    {"sku": "AP-1", "qty": 1, "unit_price": "1.00"}]
        }).status_code == 201
    other = _deal(crm, bo, f"Other {_uid()}", region="西南", skus=("X-1",), amount="5.00")
    stop, waits = threading.Event(), []

    def write():
        while not stop.is_set():
            started = time.perf_counter()
            _patch(bo, crm.api(f"/opportunities/{other['id']}"), {"name": f"w{len(waits)}"})
            waits.append(time.perf_counter() - started)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.3)
    started = time.perf_counter()
    _patch(ann, crm.api(f"/accounts/{account['id']}"), {"name": f"Renamed {_uid()}"})
    renamed = time.perf_counter() - started
    wait_for(lambda: crm.sql("opportunities", "select count(*) from opportunity_collision_rechecks")[0][0] == 0,
             timeout=60, what="the rechecks drained")
    stop.set()
    writer.join()
    waits.sort()
    print(f"rename {renamed * 1000:.0f} ms; concurrent writes p50 {waits[len(waits) // 2] * 1000:.0f} ms, "
          f"p90 {waits[int(len(waits) * 0.9)] * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms over {len(waits)}")
    # Re-detecting 200 deals inline takes seconds and holds every writer behind it; queued, the
    # rename and the writes around it take tens of milliseconds. The bounds sit between the two
    # with room for a loaded 2-core CI (the rename once took 0.24 s there with the queue working).
    assert renamed < 1.0
    assert waits[int(len(waits) * 0.9)] < 0.5 and waits[-1] < 2.0


# ---- 9. lone surrogates, and the server's own errors ---------------------------------------------------------
def test_a_lone_surrogate_is_422_everywhere_and_server_level_errors_are_problem_json(crm):
    body = b'{"username": "\\ud800", "password": "x"}'
    r = requests.post(crm.api("/auth/token"), data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", r.text
    ann = crm.as_("ann")
    for _, base in _both(crm, "leads", ann):
        r = ann.post(f"{base}/leads", data=b'{"company": "A\\udc00B"}', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["errors"] == {"company": ["unpaired UTF-16 surrogate"]}
    paired = ann.post(crm.api("/leads"), data=b'{"company": "\\ud83d\\ude00 Emoji Co"}',
                      headers={"Content-Type": "application/json"})
    assert paired.status_code == 201 and paired.json()["company"].startswith("\U0001F600")
    for base in (crm.url, crm.service_url("leads")):
        long = requests.get(f"{base}/api/v1/leads?q={'x' * 9000}", timeout=10)
        assert long.status_code == 414 and long.headers["Content-Type"] == "application/problem+json"
        assert long.json()["status"] == 414


def test_the_gateways_metrics_are_not_served_on_the_public_port(crm):
    crm.as_("ann").get(crm.api("/leads"))
    public = requests.get(f"{crm.url}/metrics", timeout=10)
    assert public.status_code == 404 and public.headers["Content-Type"] == "application/problem+json"
    private = requests.get(f"http://127.0.0.1:{crm.ports['gateway-metrics']}/metrics", timeout=10)
    assert private.status_code == 200 and 'crm_http_requests_total{' in private.text
    assert 'service="gateway"' in private.text
