"""The gateway's directory in-process (Flask test client) on SQLite and PostgreSQL: users and teams,
tokens and what makes them stale, sub-team management, handover bookkeeping, events in the outbox.
Forwarding and composition need the services running and are covered end to end (tests/e2e)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from crmkit.db import make_engine
from crmkit.events import encode, new_event, parse_envelope
from crmkit.migrations import alembic_config
from gateway import bootstrap, services
from gateway.db import KIT_TABLES, Base, Handover
from tests.infra import JWT_SECRET

ADMIN_PASSWORD = "admin-password-0"
PASSWORD = "user-password-0"
OUTBOX = KIT_TABLES["outbox"]


@pytest.fixture
def gw(database_url, topic_prefix, monkeypatch):
    for name, value in {"GATEWAY_DATABASE_URL": database_url, "CRM_TOPIC_PREFIX": topic_prefix,
                        "CRM_JWT_SECRET": JWT_SECRET, "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD,
                        "CRM_HANDOVER_SERVICES": "leads,orders", "CRM_SIGN_IN_FAILURES": "8",
                        "LEADS_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
    bootstrap.context.cache_clear()
    bootstrap.gateway.cache_clear()
    bootstrap.migrate()
    with bootstrap.context().db.uow() as uow:
        services.bootstrap_admin(uow, bootstrap.context().settings, ADMIN_PASSWORD)
        uow.commit()
    from gateway.api import create_app
    yield Gateway(create_app().test_client())
    bootstrap.gateway().user_statuses.stop()
    bootstrap.context().db.engine.dispose()
    bootstrap.context.cache_clear()
    bootstrap.gateway.cache_clear()


class Gateway:
    def __init__(self, client):
        self.client = client

    def login(self, username: str, password: str = PASSWORD):
        return self.client.post("/api/v1/auth/token", json={"username": username, "password": password})

    def as_(self, username: str, password: str | None = None) -> As:
        r = self.login(username, password or (ADMIN_PASSWORD if username == "admin" else PASSWORD))
        assert r.status_code == 200, r.json
        return As(self.client, r.json["access_token"])


class As:
    def __init__(self, client, token: str):
        self.client, self.token = client, token
        self.claims = jwt.decode(token, options={"verify_signature": False})

    def __getattr__(self, method):
        def call(path, headers=None, **kw):
            return getattr(self.client, method)(f"/api/v1{path}", headers={
                "Authorization": f"Bearer {self.token}", **(headers or {})}, **kw)
        return call


def events(of_type: str) -> list[dict]:
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(OUTBOX.c.payload).where(OUTBOX.c.event_type == of_type).order_by(OUTBOX.c.id))
        return [json.loads(r.payload) for r in rows]


def make_user(admin: As, username: str, role: str = "rep", team_id: str | None = None) -> dict:
    r = admin.post("/users", json={"username": username, "password": PASSWORD, "name": username.title(), "role": role,
                                   "team_id": team_id})
    assert r.status_code == 201, r.json
    return r.json


def make_team(admin: As, name: str, parent: str | None = None, manager: str | None = None) -> dict:
    r = admin.post("/teams", json={"name": name, "parent_team_id": parent, "manager_id": manager})
    assert r.status_code == 201, r.json
    return r.json


def patch(session: As, path: str, body: dict):
    current = session.get(path)
    return session.patch(path, json=body, headers={"If-Match": current.headers["ETag"]})


def test_migrations_match_the_models(database_url):
    from alembic import command
    command.upgrade(alembic_config(bootstrap.MIGRATIONS, database_url), "head")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_admin_bootstrap_happens_once_and_only_on_an_empty_directory(gw):
    with bootstrap.context().db.uow() as uow:
        assert services.bootstrap_admin(uow, bootstrap.context().settings, "another-password") is False
    assert gw.login("admin", "another-password").status_code == 401
    admin = gw.as_("admin")
    assert admin.claims["role"] == "admin" and admin.claims["ver"] == 1
    assert admin.claims["iss"] == "sfa-crm" and admin.claims["aud"] == "sfa-crm-api"
    assert admin.claims["exp"] - admin.claims["iat"] == 900


def test_users_are_created_validated_and_published_without_secrets(gw):
    admin = gw.as_("admin")
    team = make_team(admin, "East")
    ann = make_user(admin, "Ann.Lee", team_id=team["id"])
    assert ann["username"] == "ann.lee" and "password" not in ann and "password_hash" not in ann
    assert admin.post("/users", json={"username": "ANN.LEE", "password": PASSWORD, "name": "Dup", "role": "rep"}
                      ).status_code == 409
    bad = [{"username": "x", "password": PASSWORD, "name": "X", "role": "rep"},                # name too short
           {"username": "bob", "password": "short", "name": "Bob", "role": "rep"},             # weak password
           {"username": "bob", "password": PASSWORD, "name": "Bob", "role": "boss"},           # no such role
           {"username": "bob", "password": PASSWORD, "name": "Bob", "role": "rep", "team_id": str(uuid.uuid4())},
           {"username": "bob", "password": PASSWORD, "name": "Bob", "role": "rep", "token_version": 9},  # mass assignment
           {"username": "bob", "password": PASSWORD, "name": "Bob\x00", "role": "rep"}]
    for body in bad:
        assert admin.post("/users", json=body).status_code == 422, body
    created = events("user.created")
    assert [e["data"]["user"]["username"] for e in created] == ["admin", "ann.lee"]
    assert "password" not in json.dumps(created)
    assert gw.as_("ann.lee").get("/me").json["teams"] == [team["id"]]


def test_patch_needs_if_match_and_a_stale_etag_is_412(gw):
    admin = gw.as_("admin")
    ann = make_user(admin, "ann")
    assert admin.patch(f"/users/{ann['id']}", json={"name": "Ann B"}).status_code == 428
    assert admin.patch(f"/users/{ann['id']}", json={"name": "Ann B"}, headers={"If-Match": '"v9"'}).status_code == 412
    assert patch(admin, f"/users/{ann['id']}", {"name": "Ann B"}).json["name"] == "Ann B"
    assert admin.patch(f"/users/{uuid.uuid4()}", json={"name": "x"}, headers={"If-Match": '"v1"'}).status_code == 404


def test_manages_includes_sub_teams_and_cycles_are_refused(gw):
    admin = gw.as_("admin")
    boss = make_user(admin, "boss", role="manager")
    east = make_team(admin, "East", manager=boss["id"])
    north = make_team(admin, "North", parent=east["id"])
    far_north = make_team(admin, "Far North", parent=north["id"])
    west = make_team(admin, "West")
    assert set(gw.as_("boss").claims["manages"]) == {east["id"], north["id"], far_north["id"]}
    assert west["id"] not in gw.as_("boss").get("/me").json["manages"]
    r = patch(admin, f"/teams/{east['id']}", {"parent_team_id": far_north["id"]})
    assert r.status_code == 422 and "parent_team_id" in r.json["errors"]
    rep = make_user(admin, "rep1")
    assert admin.post("/teams", json={"name": "Bad", "manager_id": rep["id"]}).status_code == 422  # a rep cannot lead
    assert admin.post("/teams", json={"name": "East"}).status_code == 409


def test_tokens_die_when_their_claims_go_stale(gw):
    admin = gw.as_("admin")
    east, west = make_team(admin, "East"), make_team(admin, "West")
    make_user(admin, "ann", team_id=east["id"])
    boss = make_user(admin, "boss", role="manager")
    ann_token, boss_token = gw.as_("ann"), gw.as_("boss")
    patch(admin, f"/teams/{west['id']}", {"manager_id": boss["id"]})  # boss now manages west
    assert boss_token.get("/me").status_code == 401  # their token says they manage nothing
    assert gw.as_("boss").claims["manages"] == [west["id"]]
    patch(admin, f"/users/{gw.as_('ann').claims['sub']}", {"team_id": west["id"]})
    assert ann_token.get("/me").status_code == 401
    assert gw.as_("ann").claims["teams"] == [west["id"]]
    fresh = gw.as_("ann")
    assert patch(admin, f"/users/{fresh.claims['sub']}", {"password": "a-new-password-1"}).status_code == 200
    assert fresh.get("/me").status_code == 401
    assert gw.login("ann").status_code == 401 and gw.login("ann", "a-new-password-1").status_code == 200


def test_a_team_created_under_a_managers_tree_ends_their_token_and_is_announced(gw):
    """Creating a team widens what its ancestors' managers manage: their tokens say less than the
    directory now and would be refused by every service (each after waiting for its replica), so the
    directory ends them at once and announces the new token version."""
    admin = gw.as_("admin")
    boss = make_user(admin, "boss", role="manager")
    east = make_team(admin, "East", manager=boss["id"])
    before = gw.as_("boss")
    assert before.claims["manages"] == [east["id"]]
    north = make_team(admin, "North", parent=east["id"])
    assert before.get("/me").status_code == 401
    assert set(gw.as_("boss").claims["manages"]) == {east["id"], north["id"]}
    assert gw.as_("boss").claims["ver"] == before.claims["ver"] + 1
    unrelated = gw.as_("boss")
    make_team(admin, "West")  # nobody's tree: nobody's token ends
    assert unrelated.get("/me").status_code == 200


def test_deactivation_refuses_tokens_and_logins_and_is_published(gw):
    admin = gw.as_("admin")
    ann = make_user(admin, "ann")
    session = gw.as_("ann")
    assert patch(admin, f"/users/{ann['id']}", {"active": False}).json["active"] is False
    assert session.get("/me").status_code == 401
    assert gw.login("ann").status_code == 401
    assert [e["data"]["user"]["active"] for e in events("user.deactivated")] == [False]
    me = gw.as_("admin").claims["sub"]
    assert patch(admin, f"/users/{me}", {"active": False}).status_code == 409  # not themselves


def test_failed_sign_ins_are_counted_per_address_and_name_in_the_database(gw):
    from gateway.db import SignInFailure

    admin = gw.as_("admin")
    make_user(admin, "ann")
    make_user(admin, "cy")
    codes = [gw.login("ann", "wrong-password").status_code for _ in range(9)]
    assert codes == [401] * 8 + [429]
    refused = gw.login("ann")  # the right password too, while the count stands
    assert refused.status_code == 429 and refused.headers["Content-Type"] == "application/problem+json"
    assert 880 <= int(refused.headers["Retry-After"]) <= 900
    assert "access_token" not in refused.json
    # Another name from the same address has its own count, and so does a name nobody has (the
    # answer must not tell which names exist).
    assert gw.login("cy", "wrong-password").status_code == 401
    assert [gw.login("nobody", "x").status_code for _ in range(9)] == [401] * 8 + [429]
    # Only failures count, and a success clears them: cy may fail seven times more, sign in, and
    # start again from nothing.
    assert [gw.login("cy", "wrong-password").status_code for _ in range(6)] == [401] * 6
    assert gw.login("cy").status_code == 200
    assert [gw.login("cy", "wrong-password").status_code for _ in range(8)] == [401] * 8
    assert gw.login("cy").status_code == 429
    # Names differing only in case or spaces are one name.
    assert gw.login(" ANN ").status_code == 429
    # When the window has passed, the name may be tried again (the count starts over).
    with bootstrap.context().db.uow() as uow:
        for row in uow.session.execute(select(SignInFailure)).scalars():
            row.window_started_at -= timedelta(seconds=901)
        uow.commit()
    assert gw.login("ann").status_code == 200
    assert gw.login("cy", "wrong-password").status_code == 401
    with bootstrap.context().db.uow(readonly=True) as uow:
        rows = uow.session.execute(select(SignInFailure.key, SignInFailure.failures)).all()
    # The table holds hashes, never what was typed as a name; ann's count went with her success.
    assert len(rows) == 2 and all(len(key) == 64 for key, _ in rows)
    assert sorted(n for _, n in rows) == [1, 8]  # cy's new count, and nobody's (a refused attempt is not counted)


def test_concurrent_guesses_get_no_more_password_checks_than_the_limit(gw):
    """Counted before the check: thirty guesses at once run at most CRM_SIGN_IN_FAILURES (8 here)
    password checks, not however many passed a read of the count before any was written."""
    from concurrent.futures import ThreadPoolExecutor

    from crmkit.auth import Unauthorized
    from crmkit.problems import Problem
    from gateway import sign_in

    ctx, policy = bootstrap.context(), bootstrap.gateway().sign_in
    key = sign_in.attempt_key("198.51.100.7", "target")
    checks = []

    def attempt(uow):
        checks.append(1)
        time.sleep(0.05)
        raise Unauthorized("wrong username or password")

    def guess(_):
        try:
            sign_in.sign_in(ctx.db, policy, key, attempt)
        except Unauthorized:
            return 401
        except Problem as problem:
            return problem.status
        return 200

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(guess, range(30)))
    assert len(checks) == 8 and statuses.count(401) == 8 and statuses.count(429) == 22, statuses


def test_an_ipv6_client_counts_by_its_64():
    from gateway.sign_in import attempt_key

    assert attempt_key("2001:db8:1:2::1", "ann") == attempt_key("2001:db8:1:2:ffff::9", " ANN")
    assert attempt_key("2001:db8:1:2::1", "ann") != attempt_key("2001:db8:1:3::1", "ann")
    assert attempt_key("::ffff:192.0.2.1", "ann") == attempt_key("192.0.2.1", "ann")
    assert attempt_key("192.0.2.1", "ann") != attempt_key("192.0.2.2", "ann")


def test_handover_bookkeeping(gw):
    admin = gw.as_("admin")
    boss = make_user(admin, "boss", role="manager")
    east = make_team(admin, "East", manager=boss["id"])
    west = make_team(admin, "West")
    leaver, heir = make_user(admin, "leaver", team_id=east["id"]), make_user(admin, "heir", team_id=east["id"])
    outsider = make_user(admin, "outsider", team_id=west["id"])
    marketing = make_user(admin, "mkt", role="marketing")
    manager = gw.as_("boss")
    assert manager.post(f"/users/{leaver['id']}/handover", json={"to_user_id": outsider["id"]}).status_code == 422
    assert manager.post(f"/users/{leaver['id']}/handover", json={"to_user_id": leaver["id"]}).status_code == 422
    assert admin.post(f"/users/{leaver['id']}/handover", json={"to_user_id": marketing["id"]}).status_code == 422
    r = manager.post(f"/users/{leaver['id']}/handover", json={"to_user_id": heir["id"]})
    assert r.status_code == 202 and r.headers["Location"].endswith(r.json["handover_id"])
    handover_id = r.json["handover_id"]
    requested = events("handover.requested")
    assert requested[-1]["data"] == {"handover_id": handover_id, "from_user_id": leaver["id"], "to_user_id": heir["id"]}

    def answer(service: str, moved: int):
        with bootstrap.context().db.uow() as uow:
            services.record_handover_answer(uow, parse_envelope(encode(new_event("handover.completed", handover_id, {
                "handover_id": handover_id, "service": service, "moved": moved}, source=service))))
            uow.commit()
        return manager.get(f"/handovers/{handover_id}").json

    first = answer("leads", 12)
    assert first["services"]["leads"]["moved"] == 12 and first["status"] == "pending"
    assert answer("leads", 0) == first  # a second answer from the same service changes nothing
    status = answer("opportunities", 5)  # a service we did not ask is ignored
    assert status["status"] == "pending" and status["waiting_for"] == ["orders"]
    status = answer("orders", 3)
    assert status["status"] == "completed" and status["completed_at"] and status["waiting_for"] == []
    with bootstrap.context().db.uow(readonly=True) as uow:
        assert uow.session.get(Handover, uuid.UUID(handover_id)).services.keys() == {"leads", "orders"}

    # A service whose successor was deactivated meanwhile answers "failed": the handover fails.
    handover_id = manager.post(f"/users/{leaver['id']}/handover", json={"to_user_id": heir["id"]}).json["handover_id"]
    assert events("handover.requested")[-1]["subject"] == leaver["id"]  # keyed by the leaver: after their events
    for service, data in (("leads", {"status": "failed", "failure": "the successor is not active"}),
                          ("orders", {"status": "completed"})):
        with bootstrap.context().db.uow() as uow:
            services.record_handover_answer(uow, parse_envelope(encode(new_event("handover.completed", handover_id, {
                "handover_id": handover_id, "service": service, "moved": 0, **data}, source=service))))
            uow.commit()
    failed = manager.get(f"/handovers/{handover_id}").json
    assert failed["status"] == "failed" and "not active" in failed["services"]["leads"]["failure"]

    # While a handover to them is pending, the successor cannot be deactivated (the services may be
    # moving records to them right now); once it has answered, they can.
    pending = manager.post(f"/users/{leaver['id']}/handover", json={"to_user_id": heir["id"]}).json["handover_id"]
    etag = admin.get(f"/users/{heir['id']}").headers["ETag"]
    refused = admin.patch(f"/users/{heir['id']}", json={"active": False}, headers={"If-Match": etag})
    assert refused.status_code == 409 and refused.headers["Retry-After"] == "5"
    for service in ("leads", "orders"):
        with bootstrap.context().db.uow() as uow:
            services.record_handover_answer(uow, parse_envelope(encode(new_event("handover.completed", pending, {
                "handover_id": pending, "service": service, "moved": 0}, source=service))))
            uow.commit()
    assert admin.patch(f"/users/{heir['id']}", json={"active": False}, headers={"If-Match": etag}).status_code == 200


def test_rs256_tokens_verify_with_the_public_key_only(database_url, request, monkeypatch):
    """With CRM_JWT_PRIVATE_KEY the gateway signs RS256 (with a kid); services verify with the public
    key; an HS256 token whose secret is the public key (key confusion) is refused."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from crmkit.auth import TokenVerifier, Unauthorized
    from crmkit.settings import load_settings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    monkeypatch.setenv("CRM_JWT_PRIVATE_KEY", private_pem)
    monkeypatch.setenv("CRM_JWT_KEY_ID", "key-2026-11")
    monkeypatch.setenv("CRM_JWT_PUBLIC_KEY", public_pem)
    gw = request.getfixturevalue("gw")
    admin = gw.as_("admin")
    assert jwt.get_unverified_header(admin.token) == {"alg": "RS256", "kid": "key-2026-11", "typ": "JWT"}
    assert admin.get("/me").status_code == 200  # the gateway verifies its own tokens with the public key
    service_verifier = TokenVerifier(load_settings("leads"))
    assert service_verifier.verify(admin.token).role == "admin"
    # PyJWT will not even sign this; forge it by hand, as an attacker would.
    signing_input = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                             for part in ({"alg": "HS256", "typ": "JWT"}, admin.claims))
    mac = hmac.new(public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(Unauthorized):
        service_verifier.verify(confused)
    assert admin.client.get("/api/v1/me", headers={"Authorization": f"Bearer {confused}"}).status_code == 401


def test_query_flags_take_true_and_false_as_documented(gw):
    admin = gw.as_("admin")
    team = make_team(admin, "Flags")
    make_user(admin, "fay.active", team_id=team["id"])
    active = admin.get("/users?active=true")
    assert active.status_code == 200 and "fay.active" in {u["username"] for u in active.json["items"]}
    assert admin.get("/users?active=false").status_code == 200
    for wrong in ("1", "yes", "True"):
        assert admin.get(f"/users?active={wrong}").status_code == 400, wrong


def test_allow_lists_what_the_route_policy_allows_and_an_unknown_path_is_404(gw):
    admin = gw.as_("admin")
    options = admin.options("/teams")
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    trace = admin.trace("/teams")
    assert trace.status_code == 405 and set(trace.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    for method in ("options", "trace", "put"):
        nowhere = getattr(admin, method)("/no-such-route")
        assert nowhere.status_code == 404 and "Allow" not in nowhere.headers, method
