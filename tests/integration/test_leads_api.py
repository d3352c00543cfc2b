"""The leads API in-process (Flask test client) on SQLite and PostgreSQL, with real Kafka for the
worker-side tests: visibility, concurrency, idempotency keys, bad input, migrations, inbound topic."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid

import pytest

from crmkit.db import utcnow
from services.leads import bootstrap
from services.leads.db import Base
from tests.integration.service_client import assert_migrations_match, service_client

PROBLEM = "application/problem+json"


@pytest.fixture
def leads(database_url, topic_prefix, monkeypatch):
    with service_client(bootstrap, "leads", database_url, topic_prefix, monkeypatch) as client:
        yield client


def test_migrations_match_the_models(database_url):
    assert_migrations_match(bootstrap.MIGRATIONS, Base.metadata, database_url)


def test_visibility_by_role(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    bob = leads.as_("bob", "rep", teams=["west"])
    east_mgr = leads.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    west_mgr = leads.as_("mgr-w", "manager", teams=["west"], manages=["west"])
    marketing = leads.as_("mk", "marketing")
    service = leads.as_("svc", "service")
    executive = leads.as_("ex", "executive")

    anns = ann.post("/leads", json={"company": "Ann's prospect"}).json
    bobs = bob.post("/leads", json={"company": "Bob's prospect"}).json
    queued = marketing.post("/leads", json={"company": "Unassigned prospect"}).json
    assert (anns["owner_id"], anns["team_id"]) == ("ann", "east")
    assert (queued["owner_id"], queued["team_id"]) == (None, None)

    def listed(who):
        return {lead["company"] for lead in who.get("/leads").json["items"]}

    assert listed(ann) == {"Ann's prospect"}
    assert listed(bob) == {"Bob's prospect"}
    assert listed(east_mgr) == {"Ann's prospect", "Unassigned prospect"}
    assert listed(west_mgr) == {"Bob's prospect", "Unassigned prospect"}
    assert listed(marketing) == listed(executive) == {"Ann's prospect", "Bob's prospect", "Unassigned prospect"}

    # Another rep's lead does not exist for bob, on every by-id route.
    assert bob.get(f"/leads/{anns['id']}").status_code == 404
    assert bob.get(f"/leads/{bobs['id']}").status_code == 200
    assert bob.patch(f"/leads/{anns['id']}", json={"status": "contacted"}, headers={"If-Match": '"v1"'}).status_code == 404
    assert bob.delete(f"/leads/{anns['id']}").status_code == 404
    assert west_mgr.get(f"/leads/{anns['id']}").status_code == 404
    assert east_mgr.get(f"/leads/{anns['id']}").status_code == 200
    # Filters cannot widen what a caller sees.
    assert bob.get("/leads?owner_id=ann").json["items"] == []
    # Marketing reads every lead but works none of them; service staff have no lead routes.
    assert marketing.patch(f"/leads/{anns['id']}", json={"status": "contacted"},
                           headers={"If-Match": '"v1"'}).status_code == 403
    assert service.get("/leads").status_code == 403
    assert service.get(f"/leads/{anns['id']}").status_code == 403
    assert ann.get(f"/leads/{anns['id']}").json["company"] == "Ann's prospect"


def test_patch_needs_if_match_and_loses_no_update(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    created = ann.post("/leads", json={"company": "Acme", "email": "buyer@acme.cn"})
    lead_id, etag = created.json["id"], created.headers["ETag"]
    assert ann.patch(f"/leads/{lead_id}", json={"status": "contacted"}).status_code == 428
    first = ann.patch(f"/leads/{lead_id}", json={"status": "contacted"}, headers={"If-Match": etag})
    assert first.status_code == 200 and first.json["version"] == 2
    stale = ann.patch(f"/leads/{lead_id}", json={"interest": "lathes"}, headers={"If-Match": etag})
    assert stale.status_code == 412 and stale.content_type == PROBLEM
    assert ann.get(f"/leads/{lead_id}").json["interest"] is None
    assert ann.patch(f"/leads/{lead_id}", json={"status": "converted"},
                     headers={"If-Match": first.headers["ETag"]}).status_code == 409


def test_idempotency_key_replays_the_first_response(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    body = {"company": "Once Only Ltd."}
    first = ann.post("/leads", json=body, headers={"Idempotency-Key": "abc-1"})
    again = ann.post("/leads", json=body, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 201
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert len(ann.get("/leads").json["items"]) == 1
    assert ann.post("/leads", json={"company": "Other"}, headers={"Idempotency-Key": "abc-1"}).status_code == 422
    # Keys are per caller: another user's identical key is a separate request.
    bob = leads.as_("bob", "rep", teams=["west"])
    assert bob.post("/leads", json=body, headers={"Idempotency-Key": "abc-1"}).json["id"] != first.json["id"]


def test_cursor_paging_and_sorting(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    for i in range(7):
        ann.post("/leads", json={"company": f"P{i}"})
    seen, cursor = [], None
    while True:
        page = ann.get("/leads?limit=3" + (f"&cursor={cursor}" if cursor else "")).json
        seen += [lead["company"] for lead in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"P{i}" for i in reversed(range(7))]
    ascending = [lead["company"] for lead in ann.get("/leads?sort=created_at&limit=200").json["items"]]
    assert ascending == [f"P{i}" for i in range(7)]
    first_page = ann.get("/leads?limit=3").json
    assert ann.get(f"/leads?sort=created_at&cursor={first_page['next_cursor']}").status_code == 400


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"data": "{not json", "content_type": "application/json"}, 400),
    ({"data": "company=x", "content_type": "application/x-www-form-urlencoded"}, 415),
    ({"json": {"company": 12}}, 422),
    ({"json": {"email": "x@y.cn"}}, 422),  # neither company nor contact name
    ({"json": {"company": "A", "owner_id": "me"}}, 422),  # no mass assignment
    ({"json": {"company": "A", "score": 100}}, 422),
    ({"json": {"company": "A", "estimated_value": "-5"}}, 422),
    ({"json": {"company": "A", "estimated_value": "lots"}}, 422),
    ({"json": {"company": "A", "source": "carrier-pigeon"}}, 422),
    ({"json": {"company": "A", "follow_up_due_at": "2026-11-30T10:00:00"}}, 422),  # no timezone
    ({"json": ["company"]}, 422),
    ({"json": {"company": "x" * 201}}, 422),
    ({"data": json.dumps({"company": "x" * 2_000_000}), "content_type": "application/json"}, 413),
    ({"data": '{"company": "A", "estimated_value": ' + "1" * 5000 + "}", "content_type": "application/json"}, 400),
    ({"data": "[" * 50_000 + "]" * 50_000, "content_type": "application/json"}, 400),
    ({"json": {"company": "A", "estimated_value": "1000000000000"}}, 422),  # Numeric(14,2) overflow
    ({"json": {"company": "A", "follow_up_due_at": "0001-01-01T00:00:00+01:00"}}, 422),
    ({"json": {"company": "A", "follow_up_due_at": "9999-12-31T23:00:00-05:00"}}, 422),
    ({"json": {"company": "nul\u0000byte"}}, 422),
    ({"json": {"contact_name": "A", "email": "a\u0000@b.cn"}}, 422),
])
def test_bad_input_gets_a_clear_4xx(leads, kwargs, status):
    response = leads.as_("ann", "rep", teams=["east"]).post("/leads", **kwargs)
    assert response.status_code == status
    assert response.content_type == PROBLEM
    assert response.json["status"] == status and response.json["detail"]


def test_bad_queries_and_routes(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    crafted = [base64.urlsafe_b64encode(json.dumps(doc).encode()).decode() for doc in (
        {"s": "-created_at", "v": {"t": "dt", "v": "2020-01-01T00:00:00"}, "id": {"t": "uuid", "v": str(uuid.uuid4())}},
        {"s": "-created_at", "v": {"t": "raw", "v": "yesterday"}, "id": {"t": "uuid", "v": str(uuid.uuid4())}},
        {"s": "-created_at", "v": {"t": "dt", "v": "2020-01-01T00:00:00+00:00"}, "id": {"t": "raw", "v": "x"}},
        {"s": "-score", "v": {"t": "raw", "v": "high"}, "id": {"t": "uuid", "v": str(uuid.uuid4())}},
    )]
    for query in ("limit=0", "limit=201", "limit=x", "min_score=101", "status=won", "sort=password", "cursor=%%%",
                  "sort_by=company", "q=a%00b", f"cursor={crafted[0]}", f"cursor={crafted[1]}", f"cursor={crafted[2]}",
                  f"sort=-score&cursor={crafted[3]}"):
        r = ann.get(f"/leads?{query}")
        assert (r.status_code, r.content_type) == (400, PROBLEM), query
    assert ann.get("/leads/not-a-uuid").status_code == 404
    assert ann.get("/nothing-here").status_code == 404
    r = ann.put("/leads", json={})
    assert (r.status_code, r.content_type) == (405, PROBLEM)
    assert leads.client.get("/api/v1/leads").status_code == 401
    assert leads.client.get("/api/v1/leads", headers={"Authorization": "Bearer nonsense"}).status_code == 401


def test_marketing_sees_no_money(leads):
    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "Priced", "quoted_price": "99.5", "estimated_value": "1000"}).json
    assert (lead["quoted_price"], lead["estimated_value"]) == ("99.50", "1000.00")
    seen = leads.as_("mk", "marketing").get(f"/leads/{lead['id']}").json
    assert seen["company"] == "Priced" and "quoted_price" not in seen and "estimated_value" not in seen
    listed = leads.as_("mk", "marketing").get("/leads").json["items"][0]
    assert "quoted_price" not in listed and "estimated_value" not in listed


def test_idempotency_key_states_after_crashes(leads):
    """Simulate what a process death leaves behind, straight in the table."""
    ann = leads.as_("ann", "rep", teams=["east"])
    table = bootstrap.context().tables["idempotency_keys"]
    engine = bootstrap.context().db.engine
    body = {"company": "Crashy Ltd."}

    def claim(key, state, age_minutes):
        fingerprint = hashlib.sha256(b"POST/api/v1/leads" + json.dumps(body).encode()).hexdigest()
        with engine.begin() as conn:
            conn.execute(table.insert().values(principal="ann", key=key, fingerprint=fingerprint, state=state,
                                               created_at=utcnow() - dt.timedelta(minutes=age_minutes)))

    claim("died-after-commit", "committed", 3)
    r = ann.post("/leads", data=json.dumps(body), content_type="application/json",
                 headers={"Idempotency-Key": "died-after-commit"})
    assert r.status_code == 409 and "applied" in r.json["detail"]  # never applied a second time
    # Committed a moment ago, its response still being stored: in progress, retry shortly.
    for key, state in (("just-committed", "committed"), ("still-running", "in_progress")):
        claim(key, state, 0)
        busy = ann.post("/leads", data=json.dumps(body), content_type="application/json",
                        headers={"Idempotency-Key": key})
        assert busy.status_code == 409 and "in progress" in busy.json["detail"] and busy.headers["Retry-After"] == "1"
    claim("died-before-commit", "in_progress", 30)
    taken = ann.post("/leads", data=json.dumps(body), content_type="application/json",
                     headers={"Idempotency-Key": "died-before-commit"})
    assert taken.status_code == 201
    replay = ann.post("/leads", data=json.dumps(body), content_type="application/json",
                      headers={"Idempotency-Key": "died-before-commit"})
    assert replay.json["id"] == taken.json["id"]
    assert [i["company"] for i in ann.get("/leads").json["items"]] == ["Crashy Ltd."]
    # A request that fails validation releases its key for a corrected retry.
    assert ann.post("/leads", json={"company": 5}, headers={"Idempotency-Key": "fix-me"}).status_code == 422
    with engine.connect() as conn:
        assert conn.execute(table.select().where(table.c.key == "fix-me")).first() is None


def test_a_role_outside_the_route_gets_403_before_its_body_is_read(leads):
    rep = leads.as_("ann", "rep", teams=["east"])
    service = leads.as_("svc", "service")
    assert rep.post(f"/leads/{uuid.uuid4()}/assign", json={"nonsense": True}).status_code == 403
    assert service.post("/leads", json={}).status_code == 403
    assert service.post("/leads", data="{not json", headers={"Content-Type": "application/json"}).status_code == 403
    assert rep.put("/lead-assignment-rules", json={"rules": "bad"}).status_code == 403


def test_answers_are_utf8_json_not_unicode_escapes(leads):
    """Chinese text comes back as UTF-8 on the wire (a client that logs or greps bytes reads it), in
    records and in problems alike."""
    ann = leads.as_("ann", "rep", teams=["east"])
    r = ann.post("/leads", json={"company": "华东智联系统集成有限公司", "contact_name": "赵"})
    assert r.status_code == 201 and "华东智联".encode() in r.data and b"\\u" not in r.data
    problem = ann.post("/leads", json={"company": "华东", "email": "不是邮箱"})
    assert problem.status_code == 422 and problem.content_type == "application/problem+json"
    assert "不是邮箱".encode() in problem.data or b"\\u" not in problem.data


def test_a_managers_list_is_exactly_what_he_sees_in_order_across_cursors(leads):
    """A manager's list (his own leads, his teams', the unassigned queue: issue 19's cliff is in how it
    is found): every page, sort and filter equals the brute-force order of exactly the leads he may
    see (ties on the sort key broken by id), across cursors."""
    import datetime as dt
    import random

    from crmkit.db import utcnow
    from services.leads.db import Lead

    rng = random.Random(19)
    now = utcnow()
    rows = []
    with bootstrap.context().db.uow() as uow:
        for i in range(300):
            owner, team = rng.choice([("mgr", "east"), ("ann", "east"), ("cy", "north"), ("bo", "west"),
                                      (None, None), (None, "east"), ("mgr", "west"), ("zed", None)])
            moment = now - dt.timedelta(minutes=rng.randint(0, 50))  # ties on the sort key, on purpose
            lead = Lead(id=uuid.uuid4(), company=f"Co {i}", currency="CNY", status=rng.choice(["new", "contacted"]),
                        score=rng.randint(0, 5), owner_id=owner, team_id=team, created_by="t", touches=1,
                        activities=0, created_at=moment, updated_at=moment - dt.timedelta(minutes=rng.randint(0, 9)),
                        version=1, deleted_at=moment if i % 37 == 0 else None)
            uow.session.add(lead)
            rows.append(lead)
        uow.commit()
    mgr = leads.as_("mgr", "manager", teams=["east"], manages=["east", "north"])
    seen = [r for r in rows if r.deleted_at is None and (
        r.owner_id == "mgr" or r.team_id in ("east", "north") or (r.owner_id is None and r.team_id is None))]
    for sort, status in (("-created_at", None), ("updated_at", None), ("-score", "new"), ("score", None)):
        field, descending = sort.lstrip("-"), sort.startswith("-")
        expected = [str(r.id) for r in sorted((r for r in seen if status in (None, r.status)),
                                              key=lambda r: (getattr(r, field), r.id), reverse=descending)]
        got, cursor = [], None
        while True:
            query = {"sort": sort, "limit": 7, **({"status": status} if status else {}),
                     **({"cursor": cursor} if cursor else {})}
            page = mgr.get("/leads", query_string=query).json
            got += [lead["id"] for lead in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert got == expected, sort
