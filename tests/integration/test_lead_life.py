"""The lead life on SQLite and PostgreSQL, in-process: dedupe and merge, scoring, assignment,
follow-up, conversion, handover and CSV import. Events are checked in the outbox, where they
commit with the change (the relay and Kafka are covered by the kit and e2e tests)."""
from __future__ import annotations

import collections
import io
import json
import uuid

import pytest
from sqlalchemy import func, select

from crmkit.consumer import Reject
from crmkit.db import utcnow
from crmkit.events import new_event
from services.leads import bootstrap, conversion, handover, imports, intake
from services.leads.db import KIT_TABLES, Lead
from tests.integration.service_client import deliver
from tests.integration.test_leads_api import leads  # noqa: F401 - the fixture

OUTBOX = KIT_TABLES["outbox"]


def events(of_type: str) -> list[dict]:
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(OUTBOX.c.payload).where(OUTBOX.c.event_type == of_type).order_by(OUTBOX.c.id))
        return [json.loads(r.payload) for r in rows]


def directory(*records: tuple[str, dict]) -> None:
    """Feed the directory replica as the worker's consumer does, through the same handler."""
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        for kind, record in records:
            key = "team" if kind.startswith("team") else "user"
            deliver(handover.directory_handlers(ctx.settings), uow, new_event(kind, record["id"], {key: record},
                                                                         source="gateway"))
        uow.commit()


def user(uid: str, team: str, role: str = "rep", active: bool = True) -> tuple[str, dict]:
    return ("user.updated", {"id": uid, "name": uid, "role": role, "team_id": team, "region": "east", "active": active})


def put_rules(client, path: str, rules: list[dict]) -> None:
    current = client.get(path)
    r = client.put(path, json={"rules": rules}, headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.json


# ---- dedupe and merge ---------------------------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [
    ({"company": "Acme", "email": "Buyer@ACME.cn"}, {"company": "Other name", "email": "buyer@acme.cn"}),
    ({"contact_name": "Li Lei", "phone": "+86 138-0013-8000"}, {"contact_name": "Lei Li", "phone": "0086 13800138000"}),
    ({"contact_name": "Li Lei", "phone": "13800138000"}, {"company": "X", "phone": "+86 (138) 0013 8000"}),
    ({"company": "Acme Co., Ltd.", "contact_name": "Wang Fang"}, {"company": "ACME Limited", "contact_name": "wang  fang"}),
    ({"company": "华东机械有限公司", "contact_name": "王芳"}, {"company": "华东机械股份有限公司", "contact_name": "王芳"}),
    # full-width brackets, as typed with a Chinese input method
    ({"company": "华东机械\uff08上海\uff09有限公司", "contact_name": "王芳"}, {"company": "华东机械", "contact_name": "王 芳"}),
])
def test_each_dedupe_rule_merges_into_the_older_lead(leads, first, second):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    older = ann.post("/leads", json={**first, "interest": None})
    assert older.status_code == 201
    again = ann.post("/leads", json={**second, "interest": "five-axis lathes", "estimated_value": "80000"})
    assert again.status_code == 200 and again.json["merged"] is True
    merged = again.json
    assert merged["id"] == older.json["id"]  # the older id survives
    assert merged["touches"] == 2
    for name, value in first.items():  # nothing the older lead had is overwritten
        assert merged[name] == value
    assert merged["interest"] == "five-axis lathes" and merged["estimated_value"] == "80000.00"  # gaps filled
    assert len(ann.get("/leads").json["items"]) == 1
    [event] = events("lead.merged")
    assert event["subject"] == older.json["id"] and "interest" in event["data"]["filled"]


def test_different_people_at_one_company_are_not_duplicates(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    assert ann.post("/leads", json={"company": "Acme Ltd.", "contact_name": "Wang Fang"}).status_code == 201
    assert ann.post("/leads", json={"company": "Acme Ltd.", "contact_name": "Zhang Wei"}).status_code == 201
    assert ann.post("/leads", json={"company": "Acme Industrial", "contact_name": "Wang Fang"}).status_code == 201
    assert len(ann.get("/leads").json["items"]) == 3


def test_a_duplicate_of_someone_elses_lead_is_a_claim_that_writes_nothing_into_it(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    mia = leads.as_("mia", "manager", teams=["east"], manages=["east"])
    bob = leads.as_("bob", "rep", teams=["west"])
    original = ann.post("/leads", json={"company": "Secret Deal Co", "email": "ceo@secret.cn", "quoted_price": "1"}).json
    patched = ann.patch(f"/leads/{original['id']}", json={"status": "disqualified"},
                        headers={"If-Match": f'"v{original["version"]}"'}).json
    before = ann.get(f"/leads/{original['id']}").json
    brought = {"company": "Secret Deal", "email": "CEO@secret.cn", "phone": "0086 21 5555 0101",
               "industry": "Steel", "interest": "bob's notes", "campaign": "bob", "external_id": "B-1",
               "estimated_value": "999"}
    r = bob.post("/leads", json=brought)
    assert r.status_code == 200
    assert r.json == {"id": original["id"], "merged": False, "claimed": True, "owned_elsewhere": True,
                      "claim_id": r.json["claim_id"], "owner_id": "ann", "manager_id": "mia"}
    after = ann.get(f"/leads/{original['id']}").json
    assert after == before  # not a field, touch, score or status changed: still disqualified
    assert after["status"] == patched["status"] == "disqualified"
    claims = ann.get(f"/leads/{original['id']}/duplicate-claims").json["items"]
    assert [(c["claimed_by"], c["via"], c["brought"]["industry"]) for c in claims] == [("bob", "api", "Steel")]
    assert mia.get(f"/leads/{original['id']}/duplicate-claims").json["items"][0]["id"] == r.json["claim_id"]
    assert bob.get(f"/leads/{original['id']}/duplicate-claims").status_code == 404
    assert events("lead.merged") == []
    claimed = events("lead.duplicate_claimed")
    assert [(e["data"]["owner_id"], e["data"]["manager_id"], e["data"]["claimed_by"]) for e in claimed] == [
        ("ann", "mia", "bob")]


def test_only_the_owner_or_a_manager_reopens_a_disqualified_lead_by_bringing_it_again(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    mark = leads.as_("mark", "marketing")
    lead = ann.post("/leads", json={"company": "Gone Quiet", "email": "q@quiet.cn"}).json
    ann.patch(f"/leads/{lead['id']}", json={"status": "disqualified"}, headers={"If-Match": '"v1"'})
    r = mark.post("/leads", json={"company": "Gone Quiet", "email": "q@quiet.cn", "campaign": "expo"})
    assert r.json["claimed"] is True and r.json["merged"] is False  # marketing sees leads, changes none
    assert ann.get(f"/leads/{lead['id']}").json["status"] == "disqualified"
    again = ann.post("/leads", json={"company": "Gone Quiet", "email": "q@quiet.cn", "campaign": "call-back"})
    assert again.status_code == 200 and again.json["merged"] is True
    assert ann.get(f"/leads/{lead['id']}").json["status"] == "new"


# ---- scoring ------------------------------------------------------------------------------------
def test_default_scoring_explains_itself_and_rescores_on_change(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "A", "email": "a@a.cn", "source": "referral",
                                    "estimated_value": "150000"}).json
    assert lead["score"] == 10 + 20 + 10 + 15
    assert {r["rule"] for r in lead["score_reasons"]} == {"reachable by email", "warm source", "sizeable deal",
                                                          "large deal"}
    patched = ann.patch(f"/leads/{lead['id']}", json={"phone": "13800000000"}, headers={"If-Match": '"v1"'}).json
    assert patched["score"] == lead["score"] + 10
    ann.post(f"/leads/{lead['id']}/activities", json={"kind": "call", "summary": "intro"})
    assert ann.get(f"/leads/{lead['id']}").json["score"] == lead["score"] + 10 + 15


def test_scoring_rules_are_a_versioned_document(leads):  # noqa: F811
    admin = leads.as_("root", "admin")
    marketing = leads.as_("mk", "marketing")
    rules = [{"name": "steel", "field": "industry", "op": "eq", "value": "Steel", "points": 60},
             {"name": "big", "field": "estimated_value", "op": "gte", "value": 1000, "points": 70},
             {"name": "spam", "field": "campaign", "op": "in", "value": ["junk"], "points": -50}]
    assert admin.put("/lead-scoring-rules", json={"rules": rules}).status_code == 428
    assert admin.put("/lead-scoring-rules", json={"rules": rules}, headers={"If-Match": '"v9"'}).status_code == 412
    put_rules(admin, "/lead-scoring-rules", rules)
    assert marketing.get("/lead-scoring-rules").json == {"rules": rules, "version": 1}
    scored = admin.post("/leads", json={"company": "S", "industry": "steel", "estimated_value": "5000"}).json
    assert scored["score"] == 100  # clamped
    # Marketing sees the score its own fields earn: the money rule's 70 points are not there.
    seen = marketing.get(f"/leads/{scored['id']}").json
    assert seen["score"] == 60 and [r["rule"] for r in seen["score_reasons"]] == ["steel"]
    low = marketing.post("/leads", json={"company": "J", "campaign": "junk"}).json
    assert low["score"] == 0 and low["score_reasons"] == [{"rule": "spam", "points": -50, "field": "campaign"}]
    bad = admin.put("/lead-scoring-rules", json={"rules": [{"name": "x", "field": "password", "op": "eq",
                                                            "value": 1, "points": 5}]},
                    headers={"If-Match": '"v1"'})
    assert bad.status_code == 422
    assert leads.as_("ann", "rep").put("/lead-scoring-rules", json={"rules": []}, headers={"If-Match": '"v1"'}
                                       ).status_code == 403


def test_marketing_cannot_read_money_through_scores(leads):  # noqa: F811
    """The attack of issue 11: a ladder of 0-point rules on estimated_value, then a duplicate to force
    a rescore, would name the hidden value in score_reasons; filters and sorting on the score would
    order leads by it."""
    admin, mark = leads.as_("root", "admin"), leads.as_("mark", "marketing")
    rich = admin.post("/leads", json={"company": "Rich", "email": "r@rich.cn", "estimated_value": "150000",
                                      "quoted_price": "90000"}).json
    poor = admin.post("/leads", json={"company": "Poor", "email": "p@poor.cn", "estimated_value": "10"}).json
    assert rich["score"] > poor["score"]  # the default money rules count, for those who may read money
    current = mark.get("/lead-scoring-rules")
    ladder = current.json["rules"] + [{"name": f"v>={v}", "field": "estimated_value", "op": "gte", "value": v,
                                       "points": 0} for v in (1000, 100000, 140000, 160000)]
    refused = mark.put("/lead-scoring-rules", json={"rules": ladder}, headers={"If-Match": current.headers["ETag"]})
    assert refused.status_code == 403
    dropped = [r for r in current.json["rules"] if r["field"] != "estimated_value"]
    assert mark.put("/lead-scoring-rules", json={"rules": dropped},
                    headers={"If-Match": current.headers["ETag"]}).status_code == 403
    # What marketing may do: change the other rules, keeping the money rules as they are.
    kept = [{**r, "points": 1} if r["field"] == "email" else r for r in current.json["rules"]]
    assert mark.put("/lead-scoring-rules", json={"rules": kept}, headers={"If-Match": current.headers["ETag"]}
                    ).status_code == 200
    for lead in (rich, poor):
        seen = mark.get(f"/leads/{lead['id']}").json
        assert "estimated_value" not in seen and "quoted_price" not in seen
        assert all(r["field"] not in ("estimated_value", "quoted_price") for r in seen["score_reasons"])
    rich_seen, poor_seen = (mark.get(f"/leads/{x['id']}").json["score"] for x in (rich, poor))
    assert rich_seen == poor_seen  # the same public facts: the same score
    high = {i["id"] for i in mark.get(f"/leads?min_score={rich_seen + 1}").json["items"]}
    assert rich["id"] not in high
    assert admin.get(f"/leads?min_score={rich['score']}").json["items"][0]["id"] == rich["id"]


# ---- assignment ---------------------------------------------------------------------------------
def _route_many(n: int, **fields) -> list[Lead]:
    ctx = bootstrap.context()
    made = []
    with ctx.db.uow() as uow:
        for _ in range(n):
            made.append(intake.intake(uow, ctx.settings, {"company": f"Prospect {uuid.uuid4().hex}", **fields},
                                        owner_id=None, team_id=None, created_by="mk", actor="mk", via="test").lead)
        uow.commit()
    return made


def test_round_robin_is_fair_over_1000_leads_and_skips_inactive_reps(leads):  # noqa: F811
    directory(user("r1", "east"), user("r2", "east"), user("r3", "east"), user("r4", "east"),
              user("gone", "east", active=False), user("boss", "east", role="manager"), user("w1", "west"))
    put_rules(leads.as_("admin", "admin"), "/lead-assignment-rules", [
        {"name": "east machines", "match": {"region": "east"}, "assign_to": {"team_id": "east"},
         "strategy": "round_robin"}])
    routed = _route_many(1000, region="east")
    counts = collections.Counter(lead.owner_id for lead in routed)
    assert counts == {"r1": 250, "r2": 250, "r3": 250, "r4": 250}
    assert {lead.team_id for lead in routed} == {"east"}
    assert {lead.assigned_by_rule for lead in routed} == {"east machines"}
    assert len(events("lead.assigned")) == 1000


def test_least_loaded_fills_the_emptiest_rep_first(leads):  # noqa: F811
    directory(user("a", "north"), user("b", "north"), user("c", "north"))
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:  # a already holds 5 open leads, b holds 2 (and 3 closed that do not count)
        for owner, status, n in (("a", "new", 5), ("b", "contacted", 2), ("b", "converted", 3)):
            for _ in range(n):
                uow.session.add(Lead(id=uuid.uuid4(), version=1, status=status, score=0, score_reasons=[], touches=1,
                                     activities=0, company=f"x{uuid.uuid4().hex}", currency="CNY", source="other",
                                     owner_id=owner, team_id="north", created_by="t", created_at=utcnow(),
                                     updated_at=utcnow()))
        uow.commit()
    put_rules(leads.as_("admin", "admin"), "/lead-assignment-rules", [
        {"name": "north", "match": {}, "assign_to": {"team_id": "north"}, "strategy": "least_loaded"}])
    owners = [lead.owner_id for lead in _route_many(9)]
    # c (0) takes 2 to reach b (2); then c and b alternate by id up to a (5); then round the three.
    assert owners == ["c", "c", "b", "c", "b", "c", "b", "c", "a"]
    final = collections.Counter(owners)
    assert {"a": 5 + final["a"], "b": 2 + final["b"], "c": final["c"]} == {"a": 6, "b": 5, "c": 5}


def test_first_matching_rule_wins_and_unmatched_leads_wait_in_the_queue(leads):  # noqa: F811
    directory(user("vip-rep", "key-accounts"), user("retired", "key-accounts", active=False), user("s1", "south"))
    put_rules(leads.as_("admin", "admin"), "/lead-assignment-rules", [
        {"name": "retired person", "match": {"min_score": 0}, "assign_to": {"user_id": "retired"}},
        {"name": "hot", "match": {"min_score": 30}, "assign_to": {"user_id": "vip-rep"}},
        {"name": "south events", "match": {"region": ["south", "southwest"], "source": "event"},
         "assign_to": {"team_id": "south"}},
        {"name": "empty team", "match": {"industry": "mining"}, "assign_to": {"team_id": "nobody-home"}},
    ])
    marketing = leads.as_("mk", "marketing")
    hot = marketing.post("/leads", json={"company": "Hot", "email": "h@h.cn", "source": "event",
                                         "region": "south"}).json
    assert (hot["owner_id"], hot["assigned_by_rule"]) == ("vip-rep", "hot")  # inactive user's rule passed over
    south = marketing.post("/leads", json={"company": "South", "source": "event", "region": "southwest"}).json
    assert (south["owner_id"], south["team_id"]) == ("s1", "south")
    mine = marketing.post("/leads", json={"company": "Mine", "industry": "mining"}).json
    assert (mine["owner_id"], mine["team_id"]) == (None, "nobody-home")  # that team's own queue
    stray = marketing.post("/leads", json={"company": "Stray", "region": "north"}).json
    assert (stray["owner_id"], stray["team_id"], stray["assigned_by_rule"]) == (None, None, None)
    manager = leads.as_("m", "manager", teams=["x"], manages=["x"])
    assert {i["company"] for i in manager.get("/leads").json["items"]} == {"Stray"}  # the shared queue
    assert stray["follow_up_due_at"] is None and hot["follow_up_due_at"] is not None


def test_reassignment_by_a_manager(leads):  # noqa: F811
    directory(user("ann", "east"), user("amy", "east"), user("bob", "west"))
    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "Handoff"}).json
    manager = leads.as_("mgr", "manager", teams=["east"], manages=["east"])
    assert ann.post(f"/leads/{lead['id']}/assign", json={"user_id": "amy"}).status_code == 403
    moved = manager.post(f"/leads/{lead['id']}/assign", json={"user_id": "amy"})
    assert moved.status_code == 200 and (moved.json["owner_id"], moved.json["team_id"]) == ("amy", "east")
    assert manager.post(f"/leads/{lead['id']}/assign", json={"user_id": "bob"}).status_code == 403  # not his team
    assert manager.post(f"/leads/{lead['id']}/assign", json={"user_id": "ghost"}).status_code == 422
    assert ann.get(f"/leads/{lead['id']}").status_code == 404
    [event] = events("lead.assigned")
    assert event["data"]["previous_owner_id"] == "ann" and event["data"]["lead"]["owner_id"] == "amy"


# ---- follow-up and activities --------------------------------------------------------------------
def test_activities_move_the_follow_up_and_the_status(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "Follow Me"}).json
    assert lead["follow_up_due_at"] is not None  # owned: due within the SLA
    note = ann.post(f"/leads/{lead['id']}/activities", json={"kind": "note", "summary": "found on LinkedIn"})
    assert note.status_code == 201
    assert ann.get(f"/leads/{lead['id']}").json["status"] == "new"  # a note is not contact
    call = ann.post(f"/leads/{lead['id']}/activities", json={
        "kind": "call", "summary": "asked for a demo", "occurred_at": "2026-11-20T09:00:00Z",
        "next_contact_at": "2026-11-27T09:00:00+08:00"})
    assert call.status_code == 201
    after = ann.get(f"/leads/{lead['id']}").json
    assert after["status"] == "contacted"
    assert after["follow_up_due_at"] == "2026-11-27T01:00:00+00:00"
    assert after["last_activity_at"] == note.json["occurred_at"]  # the latest activity, not the latest logged
    first = ann.get(f"/leads/{lead['id']}/activities?limit=1").json
    second = ann.get(f"/leads/{lead['id']}/activities?limit=1&cursor={first['next_cursor']}").json
    assert [a["kind"] for a in first["items"] + second["items"]] == ["note", "call"]  # newest first
    assert second["next_cursor"] is None
    logged = events("activity.logged")
    assert logged[-1]["data"]["follow_up_due_at"] == "2026-11-27T01:00:00+00:00"
    assert logged[-1]["data"]["owner_id"] == "ann"
    assert leads.as_("bob", "rep").post(f"/leads/{lead['id']}/activities", json={"kind": "call"}).status_code == 404
    assert ann.post(f"/leads/{lead['id']}/activities", json={"kind": "carrier pigeon"}).status_code == 422


# ---- conversion ----------------------------------------------------------------------------------
def test_conversion_returns_the_ids_at_once_and_only_once(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "Buyer Ltd.", "contact_name": "Zhao Lei", "email": "z@buyer.cn",
                                    "region": "east"}).json
    body = {"opportunity_name": "Buyer lathes", "amount": "250000", "expected_close_date": "2026-12-31"}
    converted = ann.post(f"/leads/{lead['id']}/convert", json=body)
    assert converted.status_code == 202
    ids = converted.json
    assert set(ids) == {"account_id", "contact_id", "opportunity_id"}
    again = ann.post(f"/leads/{lead['id']}/convert", json=body)
    assert again.status_code == 409 and again.content_type == "application/problem+json"
    after = ann.get(f"/leads/{lead['id']}").json
    assert after["status"] == "converted" and after["opportunity_id"] == ids["opportunity_id"]
    [event] = events("lead.converted")
    assert event["data"]["account"]["id"] == ids["account_id"] and event["data"]["account"]["type"] == "b2b"
    assert event["data"]["contact"] == {"id": ids["contact_id"], "name": "Zhao Lei", "email": "z@buyer.cn",
                                        "phone": None, "is_primary": True}
    assert event["data"]["opportunity"]["amount"] == "250000.00"
    assert event["data"]["opportunity"]["source_lead_id"] == lead["id"]
    assert event["data"]["owner_id"] == "ann" and event["data"]["team_id"] == "east"
    existing = ann.post("/leads", json={"company": "Second"}).json
    account = str(uuid.uuid4())
    onto = ann.post(f"/leads/{existing['id']}/convert", json={**body, "account_id": account}).json
    assert onto["account_id"] == account and events("lead.converted")[-1]["data"]["account"]["existing"] is True


# ---- handover ------------------------------------------------------------------------------------
def test_handover_moves_only_the_open_leads_of_that_user(leads):  # noqa: F811
    directory(user("leaver", "east"), user("heir", "west"), user("other", "east"))
    leaver = leads.as_("leaver", "rep", teams=["east"])
    open_ids = [leaver.post("/leads", json={"company": f"Open {i}"}).json["id"] for i in range(3)]
    won = leaver.post("/leads", json={"company": "Won"}).json
    leaver.post(f"/leads/{won['id']}/convert", json={"opportunity_name": "w", "amount": "1",
                                                    "expected_close_date": "2026-12-01"})
    lost = leaver.post("/leads", json={"company": "Lost"}).json
    leaver.patch(f"/leads/{lost['id']}", json={"status": "disqualified"}, headers={"If-Match": '"v1"'})
    others = leads.as_("other", "rep", teams=["east"]).post("/leads", json={"company": "Not his"}).json
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", "h1", {
            "handover_id": "h1", "from_user_id": "leaver", "to_user_id": "heir"}, source="gateway"))
        uow.commit()
    with ctx.db.engine.connect() as conn:
        owners = dict(conn.execute(select(Lead.company, Lead.owner_id)).all())
        heir_team = conn.execute(select(func.count()).where(Lead.team_id == "west")).scalar_one()
    assert owners == {"Open 0": "heir", "Open 1": "heir", "Open 2": "heir", "Won": "leaver", "Lost": "leaver",
                      "Not his": "other"}
    assert heir_team == 3
    [done] = events("handover.completed")
    assert done["data"] == {"handover_id": "h1", "service": "leads", "moved": 3, "from_user_id": "leaver",
                            "to_user_id": "heir", "status": "completed", "failure": None}
    assert sorted(e["subject"] for e in events("lead.assigned")) == sorted(open_ids)
    assert others["owner_id"] == "other"
    # Handed over while still active, the leaver keeps what they make (a handover moves what someone
    # has; it does not capture an active user's future work)...
    late = leaver.post("/leads", json={"company": "Created in the gap"}).json
    assert late["owner_id"] == "leaver"
    # ... until they are deactivated: then it goes to the heir, and so does whatever arrives later.
    directory(user("leaver", "east", active=False))
    heir = leads.as_("heir", "rep", teams=["west"])
    assert heir.get(f"/leads/{late['id']}").json["owner_id"] == "heir"
    with ctx.db.uow() as uow:
        converted = uow.session.get(Lead, uuid.UUID(won["id"]))
        conversion.roll_back_conversion(uow, ctx.settings, new_event("lead.conversion_rejected", won["id"], {
            "lead_id": won["id"], "opportunity_id": str(converted.opportunity_id), "reason": "no"}, source="x"))
        uow.commit()
    assert heir.get(f"/leads/{won['id']}").json["status"] == "new"
    # Reactivated, the leaver's new work is theirs again.
    directory(user("leaver", "east"))
    assert leads.as_("leaver", "rep", teams=["east"]).post("/leads", json={"company": "Back"}).json["owner_id"] == \
        "leaver"


def test_a_handover_to_a_successor_deactivated_meanwhile_moves_nothing_and_fails(leads):  # noqa: F811
    directory(user("leaver", "east"), user("gone", "west", active=False))
    lead = leads.as_("leaver", "rep", teams=["east"]).post("/leads", json={"company": "Stays"}).json
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", "leaver", {
            "handover_id": "h2", "from_user_id": "leaver", "to_user_id": "gone"}, source="gateway"))
        uow.commit()
    [failed] = events("handover.completed")
    assert (failed["data"]["status"], failed["data"]["moved"]) == ("failed", 0) and "not active" in \
        failed["data"]["failure"]
    assert leads.as_("leaver", "rep", teams=["east"]).get(f"/leads/{lead['id']}").json["owner_id"] == "leaver"


# ---- CSV import ----------------------------------------------------------------------------------
def _run_import(job_id: str) -> None:
    ctx = bootstrap.context()
    while imports.process_next_chunk(ctx.db, ctx.settings):
        pass


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gb18030"])
def test_csv_import_with_chinese_headers_and_bad_rows(leads, encoding):  # noqa: F811
    csv_text = ("公司,联系人,电话,邮箱,地区,行业,来源,兴趣,报价\n"
                "华东机械有限公司,王芳,13800138000,wf@hd.cn,华东,机械,展会,数控机床,\"128,000\"\n"
                ",,,,,,,,\n"
                "没有联系人的行,,,bad-email,华北,,,,\n"
                "华东机械股份有限公司,王芳,,,,,,,\n"
                ",,13900000000,,,,网站,,\n"
                "深圳电子,李雷,+86 755 8888 0000,ll@sz.cn,华南,电子,推荐,,abc\n")
    marketing = leads.as_("mk", "marketing")
    r = marketing.post("/leads/import", data={"file": (io.BytesIO(csv_text.encode(encoding)), "l.csv")},
                       content_type="multipart/form-data")
    assert r.status_code == 202
    job_id = r.json["job_id"]
    assert marketing.get(f"/lead-imports/{job_id}").json["status"] == "queued"
    _run_import(job_id)
    job = marketing.get(f"/lead-imports/{job_id}").json
    assert (job["status"], job["rows"], job["created"], job["merged"], job["rejected"]) == ("completed", 5, 1, 1, 3)
    assert [e["row"] for e in job["errors"]] == [4, 6, 7]  # file line numbers; line 3 was blank
    assert "email" in job["errors"][0]["errors"]
    assert "company" in job["errors"][1]["errors"]  # a phone alone names nobody
    assert "quoted_price" in job["errors"][2]["errors"]
    [lead] = marketing.get("/leads").json["items"]
    assert (lead["company"], lead["source"], lead["touches"], lead["interest"]) == ("华东机械有限公司", "event", 2,
                                                                                   "数控机床")
    assert leads.as_("bob", "rep").get(f"/lead-imports/{job_id}").status_code == 404


def test_import_rejects_what_it_cannot_read(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    for content in (b"colour,size\nred,XL\n", b"\xff\xfe\x00\x01garbage\x80", b""):
        r = ann.post("/leads/import", data={"file": (io.BytesIO(content), "x.csv")}, content_type="multipart/form-data")
        assert r.status_code == 422, content
    assert ann.post("/leads/import", data={"other": "x"}, content_type="multipart/form-data").status_code == 422


# ---- edges found in review ------------------------------------------------------------------------
def test_a_broken_csv_is_refused_at_upload_with_the_line(leads):  # noqa: F811
    marketing = leads.as_("mk", "marketing")
    huge = "x" * 200_000  # past the csv module's 128 KiB field limit
    broken = f"company,contact_name\nFine Co,A\nBig Co,\"{huge}\"\nAfter Co,B\n".encode()
    fine = "company,电话,手机\nPhone Co,010-5555-0101,\n".encode()
    refused, accepted = (marketing.post("/leads/import", data={"file": (io.BytesIO(c), "f.csv")},
                                        content_type="multipart/form-data") for c in (broken, fine))
    assert refused.status_code == 422 and "line 3" in refused.json["detail"]
    ctx = bootstrap.context()
    while imports.process_next_chunk(ctx.db, ctx.settings):
        pass
    done = marketing.get(f"/lead-imports/{accepted.json['job_id']}").json
    assert done["status"] == "completed" and done["created"] == 1
    [lead] = marketing.get("/leads").json["items"]
    assert lead["phone"] == "010-5555-0101"  # an empty 手机 column does not blank 电话


def test_an_import_over_the_row_cap_is_refused_and_claims_are_counted_not_merged(leads, monkeypatch):  # noqa: F811
    monkeypatch.setenv("LEADS_IMPORT_MAX_ROWS", "3")
    ann, bob = leads.as_("ann", "rep", teams=["east"]), leads.as_("bob", "rep", teams=["west"])
    over = "company,email\n" + "".join(f"Co {i},c{i}@x.cn\n" for i in range(4))
    r = bob.post("/leads/import", data={"file": (io.BytesIO(over.encode()), "f.csv")}, content_type="multipart/form-data")
    assert r.status_code == 422 and "more than 3 rows" in r.json["detail"]
    anns = ann.post("/leads", json={"company": "Ann's Prospect", "email": "mine@ann.cn"}).json
    rows = "company,email,industry\nAnn's Prospect,MINE@ann.cn,Bob's guess\nBob's Own,bob@own.cn,\nBob's Own,bob@own.cn,Steel\n"
    job = bob.post("/leads/import", data={"file": (io.BytesIO(rows.encode()), "f.csv")},
                   content_type="multipart/form-data").json["job_id"]
    ctx = bootstrap.context()
    while imports.process_next_chunk(ctx.db, ctx.settings):
        pass
    done = bob.get(f"/lead-imports/{job}").json
    assert (done["status"], done["rows"], done["created"], done["merged"], done["claimed"]) == (
        "completed", 3, 1, 1, 1)
    assert ann.get(f"/leads/{anns['id']}").json["industry"] is None  # nothing of bob's written into it
    assert [c["via"] for c in ann.get(f"/leads/{anns['id']}/duplicate-claims").json["items"]] == ["import"]


def test_odd_values_are_4xx_not_500(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    long_phone = ann.post("/leads", json={"company": "P", "phone": "1" * 45})
    assert long_phone.status_code == 201  # too long to identify anyone: no dedupe key, but kept
    long_email = ann.post("/leads", json={"company": "E", "email": "ß" * 150 + "@example.com"})
    assert long_email.status_code == 201
    again = ann.post("/leads", json={"company": "E2", "email": "ß" * 150 + "@example.com"})
    assert again.status_code == 200 and again.json["id"] == long_email.json["id"]  # the digest still matches
    admin = leads.as_("admin", "admin")
    for body in ('{"rules": [{"name": "n", "field": "touches", "op": "gte", "value": NaN, "points": 5}]}',
                 '{"rules": [{"name": "n", "field": "touches", "op": "gte", "value": Infinity, "points": 5}]}'):
        r = admin.put("/lead-scoring-rules", data=body, content_type="application/json", headers={"If-Match": '"v0"'})
        assert r.status_code == 400, r.json
    lead = ann.post("/leads", json={"company": "Named", "contact_name": "Someone"}).json
    emptied = ann.patch(f"/leads/{lead['id']}", json={"company": None, "contact_name": None},
                        headers={"If-Match": '"v1"'})
    assert emptied.status_code == 422


def test_merging_reopens_a_disqualified_lead_and_skips_converted_ones(leads):  # noqa: F811
    ann = leads.as_("ann", "rep", teams=["east"])
    dropped = ann.post("/leads", json={"company": "Came Back", "email": "back@x.cn"}).json
    ann.patch(f"/leads/{dropped['id']}", json={"status": "disqualified"}, headers={"If-Match": '"v1"'})
    reopened = ann.post("/leads", json={"company": "Came Back Ltd", "email": "BACK@x.cn"})
    assert reopened.status_code == 200 and reopened.json["status"] == "new"
    assert reopened.json["follow_up_due_at"] is not None
    customer = ann.post("/leads", json={"company": "Customer", "email": "buyer@c.cn"}).json
    ann.post(f"/leads/{customer['id']}/convert", json={"opportunity_name": "o", "amount": "1",
                                                      "expected_close_date": "2026-12-01"})
    repeat = ann.post("/leads", json={"company": "Customer", "email": "buyer@c.cn"})
    assert repeat.status_code == 201 and repeat.json["id"] != customer["id"]  # new business, new lead


def test_handover_to_a_user_the_replica_does_not_know_yet_is_retried(leads):  # noqa: F811
    ctx = bootstrap.context()
    with ctx.db.uow() as uow, pytest.raises(LookupError, match="not in the directory"):
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", "h9", {
            "handover_id": "h9", "from_user_id": "a", "to_user_id": "nobody-yet"}, source="gateway"))


# ---- visits to leads (the opportunities service's visit.checked_in) ------------------------------
def _checked_in(lead_id, activity_id, **visit):
    return new_event("visit.checked_in", str(uuid.uuid4()), {"visit": {
        "id": str(uuid.uuid4()), "lead_id": lead_id, "activity_id": activity_id, "kind": "visit",
        "outcome": "met the buyer", "checked_in_at": "2026-12-01T03:00:00+00:00",
        "next_contact_at": "2026-12-08T02:00:00+00:00", "owner_id": "ann", **visit}, "manager_id": None},
        source="opportunities", actor="ann")


def test_a_visit_checked_in_on_a_lead_is_logged_there_once(leads):  # noqa: F811
    from services.leads import visits

    ann = leads.as_("ann", "rep", teams=["east"])
    lead = ann.post("/leads", json={"company": "Visited Co", "contact_name": "Zhou"}).json
    ctx, activity_id = bootstrap.context(), str(uuid.uuid4())
    for _ in range(2):  # a replay under a new event id logs nothing more
        with ctx.db.uow() as uow:
            visits.log_visit(uow, ctx.settings, _checked_in(lead["id"], activity_id))
            uow.commit()
    [logged] = ann.get(f"/leads/{lead['id']}/activities").json["items"]
    assert (logged["id"], logged["kind"], logged["summary"], logged["created_by"]) == (
        activity_id, "visit", "met the buyer", "ann")
    after = ann.get(f"/leads/{lead['id']}").json
    assert after["status"] == "contacted" and after["follow_up_due_at"].startswith("2026-12-08")
    assert [e["data"]["activity_id"] for e in events("activity.logged")] == [activity_id]
    with ctx.db.uow() as uow:  # an account's visit is not the leads service's to log
        assert visits.log_visit(uow, ctx.settings, _checked_in(None, None)) is None
    # The lead passed to another team before the event arrived: Ann's visit does not change it.
    directory(user("ann", "east"), user("bob", "west"))
    with ctx.db.uow() as uow:
        uow.session.get(Lead, uuid.UUID(lead["id"])).owner_id = "bob"
        uow.session.get(Lead, uuid.UUID(lead["id"])).team_id = "west"
        uow.commit()
    with ctx.db.uow() as uow, pytest.raises(Reject, match="no longer holds"):
        visits.log_visit(uow, ctx.settings, _checked_in(lead["id"], str(uuid.uuid4())))
    for bad in (_checked_in(lead["id"], None), _checked_in(lead["id"], activity_id, kind="lunch"),
                _checked_in(lead["id"], activity_id, checked_in_at="yesterday")):
        with ctx.db.uow() as uow, pytest.raises(Reject):
            visits.log_visit(uow, ctx.settings, bad)
