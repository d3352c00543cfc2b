"""The HAProxy edge (issue 14) in front of the running stack: what it refuses before any Python runs,
and that what it lets through reaches the right service. Real haproxy, real services."""
from __future__ import annotations

import base64
import json
import socket
import time
import uuid

import jwt
import pytest
import requests

from crmkit.auth import issue_token
from tests.e2e.edge_stack import start_edge
from tests.e2e.gateway_stack import PASSWORD, free_port
from tests.infra import JWT_SECRET, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module")
def edge(crm, tmp_path_factory):
    edge = start_edge(crm, tmp_path_factory.mktemp("edge"))
    yield edge
    edge.stop()


def _problem(r: requests.Response, status: int) -> dict:
    """The answer is this status as problem+json, in exactly the documented problem schema."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert set(body) <= {"type", "title", "status", "detail", "errors"}, body
    assert r.headers["X-Request-ID"]
    return body


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(crm, name: str, **changes) -> dict:
    user = crm.users[name]
    now = int(time.time())
    return {"sub": user["id"], "role": user["role"], "name": name, "teams": [], "manages": [], "iss": "sfa-crm",
            "aud": "sfa-crm-api", "iat": now, "exp": now + 600, **changes}


def _get(edge, token: str | None, path: str = "/leads") -> requests.Response:
    return requests.get(edge.api(path), headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def test_a_signed_in_user_reaches_the_service_through_the_edge(crm, edge):
    token = crm.token("ann")
    r = _get(edge, token)
    assert r.status_code == 200, r.text
    assert "items" in r.json()
    assert r.headers["X-Request-ID"]
    mine = requests.get(edge.api("/leads"), headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-42"},
                        timeout=10)
    assert mine.headers["X-Request-ID"] == "trace-42"
    # The gateway's own routes go to the gateway, sign-in included (no token needed there).
    signed_in = requests.post(edge.api("/auth/token"), json={"username": "ann", "password": "password-for-tests"},
                              timeout=10)
    assert signed_in.status_code == 200 and signed_in.json()["access_token"]
    assert _get(edge, token, "/me").json()["username"] == "ann"
    assert requests.get(f"{edge.url}/openapi.json", timeout=30).json()["paths"]


@pytest.mark.parametrize("attack", ["none", "no signature", "wrong secret", "expired", "wrong issuer",
                                    "wrong audience", "tampered role", "key confusion", "unknown role", "garbage"])
def test_a_token_that_is_not_ours_or_not_valid_is_401_at_the_edge(crm, edge, attack):
    claims = _claims(crm, "ann")
    header = {"alg": "HS256", "typ": "JWT"}
    if attack == "none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    elif attack == "no signature":
        token = f"{_b64(header)}.{_b64(claims)}."
    elif attack == "wrong secret":
        token = jwt.encode(claims, "another-secret-that-is-long-enough-0123456789", algorithm="HS256")
    elif attack == "expired":
        token = jwt.encode({**claims, "exp": int(time.time()) - 60}, JWT_SECRET, algorithm="HS256")
    elif attack == "wrong issuer":
        token = jwt.encode({**claims, "iss": "someone-else"}, JWT_SECRET, algorithm="HS256")
    elif attack == "wrong audience":
        token = jwt.encode({**claims, "aud": "another-api"}, JWT_SECRET, algorithm="HS256")
    elif attack == "tampered role":
        good = jwt.encode(claims, JWT_SECRET, algorithm="HS256").split(".")
        token = ".".join([good[0], _b64({**claims, "role": "executive"}), good[2]])
    elif attack == "key confusion":  # signed with the secret but claiming RS256, as if it were a public key
        good = jwt.encode(claims, JWT_SECRET, algorithm="HS256").split(".")
        token = ".".join([_b64({"alg": "RS256", "typ": "JWT"}), good[1], good[2]])
    elif attack == "unknown role":
        token = jwt.encode({**claims, "role": "superuser"}, JWT_SECRET, algorithm="HS256")
    else:
        token = "not-a-jwt"
    r = _get(edge, token)
    _problem(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_token_is_401_and_the_services_still_refuse_a_stale_one(crm, edge):
    _problem(_get(edge, None), 401)
    _problem(_get(edge, None, "/no-such-thing"), 401)  # as the gateway: who you are comes first
    # Signed with our secret, unexpired, ours: the edge lets it through. But it lacks the token
    # version the directory issued (as a token from before a password or role change would):
    # the service, checking its directory replica (the second lock), refuses it.
    stale = issue_token(secret=JWT_SECRET, user_id=crm.users["ann"]["id"], role="rep", name="ann")
    r = _get(edge, stale)
    assert "sign in again" in _problem(r, 401)["detail"]  # the service's answer, not the edge's


def test_the_route_policy_is_enforced_before_any_service(crm, edge):
    ann, marketing = crm.token("ann"), crm.token("mkt")
    _problem(_get(edge, ann, "/no-such-thing"), 404)
    _problem(_get(edge, ann, "/users"), 403)  # the directory is the admin's
    _problem(_get(edge, marketing, "/opportunities"), 403)  # marketing works leads, not deals
    r = requests.delete(edge.api("/leads"), headers={"Authorization": f"Bearer {ann}"}, timeout=10)
    _problem(r, 405)
    assert r.headers["Allow"] == "GET, HEAD, OPTIONS, POST"
    # Not public: the services' metrics are scraped on their own ports.
    _problem(requests.get(f"{edge.url}/metrics", timeout=10), 404)


def test_an_encoded_slash_does_not_make_the_edge_check_another_route(crm, edge):
    """gunicorn decodes %2F before the service routes the request; the edge matches the decoded path
    too, so this is the duplicate-claims route (not marketing's) and refused at the edge."""
    lead = "0f0f0f0f-0000-4000-8000-000000000000"
    r = requests.get(edge.api(f"/leads/{lead}%2Fduplicate-claims"),
                     headers={"Authorization": f"Bearer {crm.token('mkt')}"}, timeout=10)
    assert _problem(r, 403)["detail"] == "your role may not do this"  # the edge's answer, not the service's


def test_a_client_trickling_a_sign_in_body_gets_408_and_holds_no_one_up(crm, edge):
    """Headers and a small body must arrive within 5 s (timeout http-request with
    http-buffer-request): a service thread never waits on a slow client's body."""
    held = []
    try:
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
            s.sendall(b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"username\"")
            held.append(s)
        started = time.monotonic()
        r = requests.post(edge.api("/auth/token"), json={"username": "ann", "password": "password-for-tests"},
                          timeout=10)
        assert r.status_code == 200 and time.monotonic() - started < 2
        answers = [s.recv(4096) for s in held]  # each ends by the edge's timeout, not ours
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[:1]
        assert all(b"application/problem+json" in a for a in answers)
        assert time.monotonic() - started < 8
    finally:
        for s in held:
            s.close()


def test_a_sign_in_body_over_4_kib_is_refused(edge):
    r = requests.post(edge.api("/auth/token"), json={"username": "ann", "password": "x" * 5000}, timeout=10)
    _problem(r, 413)


def test_a_body_over_the_limit_is_413_before_it_reaches_a_service(crm, edge):
    r = requests.post(edge.api("/leads"), data=b"x" * (1024 * 1024 + 1),
                      headers={"Authorization": f"Bearer {crm.token('ann')}", "Content-Type": "application/json"},
                      timeout=30)
    _problem(r, 413)


def test_a_service_that_is_not_there_is_503_problem_json(crm, edge):
    crm.stop("notifications-api")
    try:
        r = _get(edge, crm.token("exec"), "/notifications")
        _problem(r, 503)
    finally:
        crm.start("notifications-api")
    wait_for(lambda: _get(edge, crm.token("exec"), "/notifications").status_code == 200, timeout=30,
             what="the notifications service back behind the edge")


def test_rate_limits_answer_429_with_retry_after(crm, tmp_path):
    strict = start_edge(crm, tmp_path, EDGE_LIMIT_PER_USER="5", EDGE_LIMIT_LOGIN="3")
    try:
        token = crm.token("amy")
        statuses = [_get(strict, token).status_code for _ in range(8)]
        assert statuses[:5] == [200] * 5 and statuses[-1] == 429, statuses
        r = _get(strict, token)
        _problem(r, 429)
        assert int(r.headers["Retry-After"]) > 0
        assert _get(strict, crm.token("bo")).status_code == 200  # another user has a budget of their own
        # With or without a trailing slash, a sign-in attempt is one (the route allows both).
        logins = [requests.post(strict.api("/auth/token" + ("/" if i % 2 else "")),
                                json={"username": "bo", "password": "wrong"}, timeout=10).status_code
                  for i in range(5)]
        # (The gateway has no route with the slash: 404, but the attempt counted.)
        assert set(logins[:3]) <= {401, 404} and logins[3:] == [429, 429], logins
    finally:
        strict.stop()


def test_two_edges_share_one_limit_through_peers(crm, tmp_path):
    """Two edge processes, a user's requests alternating between them: the per-user limit holds
    across both (each alone would let the whole limit through, twice over together)."""
    ports = {"a": free_port(), "b": free_port()}
    peers = " ".join(f"{name}@127.0.0.1:{port}" for name, port in ports.items())
    edges = [start_edge(crm, tmp_path / name, EDGE_PEER_NAME=name, EDGE_PEERS=peers, EDGE_LIMIT_PER_USER="10")
             for name in ports]
    try:
        token = crm.token("nora")
        statuses = []
        for i in range(24):
            statuses.append(_get(edges[i % 2], token).status_code)
            time.sleep(0.05)  # the peers push each update at once; let it land
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) <= 12, statuses  # 10, and at most one in flight per edge while syncing
        assert statuses[-4:] == [429] * 4, statuses
    finally:
        for edge in edges:
            edge.stop()


def test_slow_clients_do_not_starve_anyone_else(crm, edge):
    """40 connections each sending half a request and then nothing, held open: a normal client
    keeps getting answers within a second throughout."""
    token = crm.token("ann")
    held = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
            s.sendall(b"GET /api/v1/leads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
            held.append(s)
        slowest = 0.0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert _get(edge, token).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 1.0, slowest
    finally:
        for s in held:
            s.close()


def test_the_edge_exports_prometheus_metrics_on_its_private_port(crm, edge):
    _get(edge, crm.token("ann"))
    text = requests.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=10).text
    assert "haproxy_backend_http_responses_total" in text and 'proxy="be_leads"' in text


def test_behind_a_proxy_one_clients_failed_sign_ins_do_not_lock_out_another(crm, tmp_path):
    """An ingress controller in front (EDGE_TRUSTED_PROXIES): the sign-in count is per client it
    forwards, so a stranger failing ten times for a user does not lock that user out elsewhere."""
    proxied = start_edge(crm, tmp_path / "proxied", EDGE_TRUSTED_PROXIES="127.0.0.1")
    try:
        name = f"target{uuid.uuid4().hex[:8]}"
        created = crm.as_("admin").post(crm.api("/users"), json={
            "username": name, "password": PASSWORD, "name": name, "role": "rep", "team_id": crm.teams["east"]["id"]})
        assert created.status_code == 201, created.text

        def sign_in(password: str, client: str) -> int:
            return requests.post(proxied.api("/auth/token"), json={"username": name, "password": password},
                                 headers={"X-Forwarded-For": client}, timeout=10).status_code

        assert [sign_in("guess", "192.0.2.66") for _ in range(11)] == [401] * 10 + [429]
        assert sign_in(PASSWORD, "192.0.2.66") == 429
        assert sign_in(PASSWORD, "198.51.100.23") == 200  # the user, from where they are
    finally:
        proxied.stop()
