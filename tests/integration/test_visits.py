"""The rep's day in-process on SQLite and PostgreSQL (issue 18): visit plans through check-in,
rescheduling and the end-of-day sweep; daily reports drafted from the day's records (this service's
and the other services' events) and frozen on submission; weekly progress against a brute-force
recomputation; market notes; and what another team's rep, a manager and an executive may see."""
from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from sqlalchemy import select

from crmkit.consumer import Reject
from crmkit.db import utcnow
from crmkit.events import new_event
from crmkit.periods import day_bounds, local_day
from services.opportunities import bootstrap, day_facts, visit_progress, visits
from services.opportunities.day_db import (
    AttainmentSnapshot,
    KnownLead,
    LeadActivity,
    OrderFact,
    PaymentFact,
    PipelineChange,
    StageMove,
    Visit,
)
from services.opportunities.db import Account, Activity, DirectoryUser, Opportunity
from tests.integration.service_client import deliver, service_client


@pytest.fixture
def opps(database_url, topic_prefix, monkeypatch):
    monkeypatch.delenv("CRM_CLOCK_FILE", raising=False)
    with service_client(bootstrap, "opportunities", database_url, topic_prefix, monkeypatch) as client:
        yield client


def _uow():
    return bootstrap.context().db.uow()


def _today() -> dt.date:
    return local_day(utcnow())


def _at(day: dt.date, hour: int, minute: int = 0) -> str:
    """A moment of `day` where the company works, as the API takes it."""
    start, _ = day_bounds(day)
    return (start + dt.timedelta(hours=hour, minutes=minute)).isoformat()


def _published(kind: str) -> list[dict]:
    outbox = bootstrap.KIT_TABLES["outbox"]
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == kind).order_by(outbox.c.id))
        return [json.loads(r.payload) for r in rows]


def _account(client, name="Acme", region="East") -> dict:
    r = client.post("/accounts", json={"name": name, "region": region})
    assert r.status_code == 201, r.json
    return r.json


def _deliver(table, kind, subject, data, *, actor=None, time=None):
    event = new_event(kind, subject, data, source="other", actor=actor)
    event["time"] = time or utcnow()
    with _uow() as uow:
        deliver(table, uow, event)
        uow.commit()


def _lead(lead_id, owner, team, *, source="event", version=1, created_at=None, status="new"):
    _deliver(day_facts.LEAD_HANDLERS, "lead.created" if version == 1 else "lead.updated", lead_id, {"lead": {
        "id": str(lead_id), "owner_id": owner, "team_id": team, "company": "Lead Co", "source": source,
        "status": status, "version": version, "created_at": (created_at or utcnow()).isoformat(), "score": 10}})


def _advance(client, deal: dict, stage: str = "needs_analysis"):
    """Tick the qualification checklist and move the deal on (answers the stage move)."""
    for key in ("budget_confirmed", "decision_maker_identified"):
        assert client.post(f"/opportunities/{deal['id']}/checklist/{key}", json={"done": True}).status_code == 200
    etag = client.get(f"/opportunities/{deal['id']}").headers["ETag"]
    return client.post(f"/opportunities/{deal['id']}/stage", json={"stage": stage}, headers={"If-Match": etag})


def _sweep(day_after: dt.date) -> int:
    return visits.sweep(bootstrap.context().db, bootstrap.context().settings,
                        now=dt.datetime.fromisoformat(_at(day_after, 12)))


def test_a_days_plan_is_checked_in_rescheduled_and_missed_once(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    bob = opps.as_("bob", "rep", teams=["west"])
    today, tomorrow = _today(), _today() + dt.timedelta(days=1)
    account = _account(ann)
    contact = ann.post(f"/accounts/{account['id']}/contacts", json={"name": "Li"}).json
    planned = []
    for i in range(5):
        r = ann.post("/visits", json={"account_id": account["id"], "planned_at": _at(today, 9 + i),
                                      "purpose": f"visit {i}", "contact_id": contact["id"]})
        assert r.status_code == 201, r.json
        planned.append(r.json)
    assert {v["date"] for v in planned} == {today.isoformat()} and {v["status"] for v in planned} == {"planned"}
    seen = mgr.get("/visits", query_string={"date": today.isoformat(), "owner_id": "ann"}).json["items"]
    assert [v["id"] for v in seen] == [v["id"] for v in planned]  # by planned time
    assert bob.get("/visits").json["items"] == [] and bob.get(f"/visits/{planned[0]['id']}").status_code == 404
    assert bob.post(f"/visits/{planned[0]['id']}/check-in", json={"outcome": "x"}).status_code == 404
    assert bob.post("/visits", json={"account_id": account["id"], "planned_at": _at(today, 9)}).status_code == 404

    next_contact = (utcnow() + dt.timedelta(days=7)).replace(microsecond=0)
    for visit in planned[:3]:
        r = ann.post(f"/visits/{visit['id']}/check-in", json={
            "outcome": f"met them ({visit['purpose']})", "latitude": 22.54, "longitude": 114.06,
            "address": "深圳市南山区", "next_contact_at": next_contact.isoformat()})
        assert r.status_code == 200, r.json
        assert r.json["status"] == "done" and r.json["activity_id"]
    assert ann.post(f"/visits/{planned[0]['id']}/check-in", json={"outcome": "again"}).status_code == 409
    activities = ann.get(f"/accounts/{account['id']}/activities").json["items"]
    assert sorted(a["summary"] for a in activities) == sorted(f"met them (visit {i})" for i in range(3))
    assert {a["next_contact_at"] for a in activities} == {next_contact.isoformat().replace("+00:00", "Z")} or \
        {dt.datetime.fromisoformat(a["next_contact_at"].replace("Z", "+00:00")) for a in activities} == {next_contact}
    assert {a["kind"] for a in activities} == {"visit"}

    moved = ann.post(f"/visits/{planned[3]['id']}/reschedule", json={"planned_at": _at(tomorrow, 10),
                                                                     "reason": "customer travelling"})
    assert moved.status_code == 200 and moved.json["status"] == "rescheduled"
    new = ann.get(f"/visits/{moved.json['rescheduled_to']}").json
    assert new["status"] == "planned" and new["date"] == tomorrow.isoformat() and new["rescheduled_from"] == planned[3]["id"]
    assert ann.post(f"/visits/{planned[3]['id']}/miss", json={"reason": "x"}).status_code == 409

    assert _sweep(today) == 0  # the day is not over
    assert _sweep(tomorrow) == 1 and _sweep(tomorrow) == 0
    left = ann.get(f"/visits/{planned[4]['id']}").json
    assert left["status"] == "missed" and left["reason"] == "not checked in by the end of the day"
    missed = [e for e in _published("visit.missed") if e["subject"] == planned[4]["id"]]
    assert len(missed) == 1 and missed[0]["data"]["automatic"] is True and missed[0]["data"]["manager_id"] == "mgr-e"
    assert ann.get(f"/visits/{new['id']}").json["status"] == "planned"  # tomorrow's is not over
    assert len(_published("visit.checked_in")) == 3 and len(_published("visit.planned")) == 6


def test_a_visit_to_a_record_the_manager_does_not_see_shows_him_nothing_of_it(opps):
    """Ann helps on Bob's account (its virtual team) and visits it: her manager sees the visit, not
    the customer: no id, purpose, outcome or place, and he cannot check it in for her."""
    ann = opps.as_("ann", "rep", teams=["east"])
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    bob = opps.as_("bob", "rep", teams=["west"])
    account = _account(bob, name="Bob's secret customer")
    assert bob.put(f"/accounts/{account['id']}/team", json={"members": [{"user_id": "ann", "role": "sales"}]}
                   ).status_code == 200
    visit = ann.post("/visits", json={"account_id": account["id"], "planned_at": _at(_today(), 10),
                                      "purpose": "price talk"}).json
    r = mgr.post(f"/visits/{visit['id']}/check-in", json={"outcome": "x"})
    assert r.status_code == 409 and account["id"] not in r.get_data(as_text=True)
    other_day = (utcnow() - dt.timedelta(days=1)).isoformat()
    assert ann.post(f"/visits/{visit['id']}/check-in", json={"outcome": "x", "at": other_day}).status_code == 422
    assert ann.post(f"/visits/{visit['id']}/check-in", json={
        "outcome": "they want 5% off", "address": "Bob's customer's street", "latitude": 1.0, "longitude": 2.0}
        ).status_code == 200
    [seen] = [v for v in mgr.get("/visits").json["items"] if v["id"] == visit["id"]]
    assert seen["target_hidden"] and seen["status"] == "done"
    assert all(seen[k] is None for k in ("account_id", "purpose", "outcome", "address", "latitude", "activity_id"))
    assert ann.get(f"/visits/{visit['id']}").json["outcome"] == "they want 5% off"
    [report] = mgr.get("/daily-reports", query_string={"date": _today().isoformat(), "owner_id": "ann"}).json["items"]
    [item] = report["summary"]["visits"]["items"]
    assert item["target_hidden"] and item["account_id"] is None and item["outcome"] is None
    assert account["id"] not in json.dumps(report) and "5% off" not in json.dumps(report)


def test_plans_refuse_what_cannot_be(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    opps.as_("bob", "rep", teams=["west"])
    account = _account(ann)
    today = _today()
    for body in ({"planned_at": _at(today, 9)},  # no target
                 {"account_id": account["id"], "lead_id": str(uuid.uuid4()), "planned_at": _at(today, 9)},
                 {"account_id": account["id"], "planned_at": _at(today - dt.timedelta(days=1), 9)},
                 {"account_id": account["id"], "planned_at": _at(today, 9), "kind": "lunch"},
                 {"lead_id": str(uuid.uuid4()), "contact_id": str(uuid.uuid4()), "planned_at": _at(today, 9)},
                 {"account_id": account["id"], "planned_at": _at(today, 9), "contact_id": str(uuid.uuid4())}):
        r = ann.post("/visits", json=body)
        assert r.status_code == 422, (body, r.json)
    # A manager plans for their rep, not for another team's.
    r = mgr.post("/visits", json={"account_id": account["id"], "planned_at": _at(today, 15), "owner_id": "ann"})
    assert r.status_code == 201 and r.json["owner_id"] == "ann" and r.json["created_by"] == "mgr-e"
    assert mgr.post("/visits", json={"account_id": account["id"], "planned_at": _at(today, 15),
                                     "owner_id": "bob"}).status_code == 403
    visit = r.json
    for path, body in (("check-in", {"outcome": ""}), ("check-in", {"outcome": "x", "latitude": 95, "longitude": 1}),
                       ("check-in", {"outcome": "x", "latitude": 10}),
                       ("check-in", {"outcome": "x", "at": (utcnow() + dt.timedelta(hours=2)).isoformat()}),
                       ("reschedule", {"planned_at": visit["planned_at"], "reason": "same"}),
                       ("miss", {})):
        r = ann.post(f"/visits/{visit['id']}/{path}", json=body)
        assert r.status_code == 422, (path, body, r.json)
    for query in ({"status": "perhaps"}, {"date": "yesterday"}, {"limit": "500"}, {"cursor": "forged"}):
        r = ann.get("/visits", query_string=query)
        assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json", query


def test_a_lead_visit_is_checked_in_for_the_leads_service_to_log(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    opps.as_("bob", "rep", teams=["west"])
    bob = opps.as_("bob", "rep", teams=["west"])
    lead_id = uuid.uuid4()
    assert ann.post("/visits", json={"lead_id": str(lead_id), "planned_at": _at(_today(), 10)}).status_code == 404
    _lead(lead_id, "ann", "east")
    assert bob.post("/visits", json={"lead_id": str(lead_id), "planned_at": _at(_today(), 10)}).status_code == 404
    visit = ann.post("/visits", json={"lead_id": str(lead_id), "planned_at": _at(_today(), 10), "kind": "call"}).json
    r = ann.post(f"/visits/{visit['id']}/check-in", json={"outcome": "call back Friday"})
    assert r.status_code == 200 and r.json["activity_id"] == str(visits.lead_activity_id(uuid.UUID(visit["id"])))
    [checked] = _published("visit.checked_in")
    assert checked["data"]["visit"]["lead_id"] == str(lead_id) and checked["data"]["visit"]["outcome"] == "call back Friday"
    # The lead converted (or passed to someone else): no more visits to plan on it.
    _lead(lead_id, "ann", "east", version=2, status="converted")
    assert ann.post("/visits", json={"lead_id": str(lead_id), "planned_at": _at(_today(), 11)}).status_code == 404


def _expected_draft(owner: str, day: dt.date) -> dict:
    """The day recomputed the slow way, from every raw row: what the draft must equal."""
    start, end = day_bounds(day)

    def within(moment) -> bool:
        return moment is not None and start <= moment < end

    with _uow() as uow:
        s = uow.session
        visits_ = [v for v in s.execute(select(Visit)).scalars() if v.owner_id == owner and v.day == day]
        kinds: dict = defaultdict(int)
        team = s.get(DirectoryUser, owner).team_id

        def ours(record) -> bool:  # the rep's or the rep's team's: what their manager sees
            return record is not None and (record.owner_id == owner or (team is not None and record.team_id == team))
        for a in s.execute(select(Activity)).scalars():
            record = s.get(Opportunity, a.opportunity_id) if a.opportunity_id else s.get(Account, a.account_id)
            if a.created_by == owner and within(a.occurred_at) and ours(record):
                kinds[a.kind] += 1
        for a in s.execute(select(LeadActivity)).scalars():
            if a.logged_by == owner and within(a.occurred_at) and ours(s.get(KnownLead, a.lead_id)):
                kinds[a.kind] += 1
        leads = [lead for lead in s.execute(select(KnownLead)).scalars()
                 if lead.owner_id == owner and lead.status != "deleted" and within(lead.created_at)]
        deals = [o for o in s.execute(select(Opportunity)).scalars()
                 if o.owner_id == owner and o.deleted_at is None and within(o.created_at)]
        moves = sorted((m for m in s.execute(select(StageMove)).scalars() if m.owner_id == owner and within(m.moved_at)),
                       key=lambda m: (m.moved_at, m.id))
        orders = [o for o in s.execute(select(OrderFact)).scalars()
                  if o.owner_id == owner and o.cancelled_at is None and within(o.confirmed_at)]
        paid = [p for p in s.execute(select(PaymentFact)).scalars() if p.owner_id == owner and p.paid_on == day]
        by_source: dict = defaultdict(int)
        for lead in leads:
            by_source[lead.source] += 1

        def money(values) -> str:
            return str(sum(values, Decimal("0")).quantize(Decimal("0.01")))

        status = defaultdict(int)
        for v in visits_:
            status[v.status] += 1
        return {
            "visits": {"planned": status["planned"] + status["done"] + status["missed"], "done": status["done"],
                       "missed": status["missed"], "rescheduled": status["rescheduled"],
                       "count": len(visits_)},
            "activities": dict(kinds), "calls": kinds.get("call", 0), "new_leads": len(leads),
            "new_leads_by_source": dict(by_source),
            "opportunities_created": {"count": len(deals), "amount": money(d.amount for d in deals)},
            "stage_moves": [{"opportunity_id": str(m.opportunity_id), "from": m.from_stage, "to": m.to_stage}
                            for m in moves],
            "orders_confirmed": {"count": len(orders), "amount": money(o.total for o in orders)},
            "collected": money(p.amount for p in paid)}


def _comparable(summary: dict) -> dict:
    out = {k: v for k, v in summary.items() if k != "visits"}
    out["visits"] = {**{k: summary["visits"][k] for k in ("planned", "done", "missed", "rescheduled")},
                     "count": len(summary["visits"]["items"])}
    out["stage_moves"] = [{"opportunity_id": m["opportunity_id"], "from": m["from"], "to": m["to"]}
                          for m in summary["stage_moves"]]
    return out


def test_the_daily_report_is_drafted_from_the_day_submitted_frozen_and_reviewed(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    bob = opps.as_("bob", "rep", teams=["west"])
    today = _today()
    account = _account(ann)
    deal = ann.post("/opportunities", json={"account_id": account["id"], "name": "Servers", "amount": "120000.00",
                                            "expected_close_date": "2027-06-30"}).json
    assert _advance(ann, deal).status_code == 200
    ann.post(f"/accounts/{account['id']}/activities", json={"kind": "call", "summary": "rang the CIO"})
    helped = _account(bob, name="Bob's own")
    assert bob.put(f"/accounts/{helped['id']}/team", json={"members": [{"user_id": "ann", "role": "sales"}]}
                   ).status_code == 200
    assert ann.post(f"/accounts/{helped['id']}/activities", json={"kind": "call", "summary": "helped Bob"}
                    ).status_code == 201  # not counted: Ann's manager does not see Bob's account
    for i in range(3):
        ann.post("/visits", json={"account_id": account["id"], "planned_at": _at(today, 10 + i)})
    first = ann.get("/visits", query_string={"date": today.isoformat()}).json["items"][0]
    ann.post(f"/visits/{first['id']}/check-in", json={"outcome": "demo booked"})
    # What the other services tell: a lead of Ann's, a call on it, an order confirmed and paid.
    lead_id, order_id = uuid.uuid4(), str(uuid.uuid4())
    _lead(lead_id, "ann", "east", source="referral")
    _lead(uuid.uuid4(), "bob", "west", source="web")  # not Ann's
    _deliver(day_facts.LEAD_HANDLERS, "activity.logged", lead_id, {
        "lead_id": str(lead_id), "activity_id": str(uuid.uuid4()), "kind": "call", "occurred_at": utcnow().isoformat()},
        actor="ann")
    order = {"id": order_id, "account_id": account["id"], "owner_id": "ann", "team_id": "east", "credited_to": "ann",
             "total": "5000.00"}
    _deliver(day_facts.ORDER_HANDLERS, "order.confirmed", order_id, {"order": order})
    _deliver(day_facts.ORDER_HANDLERS, "order.confirmed", order_id, {"order": order})  # a replay: counted once
    _deliver(day_facts.ORDER_HANDLERS, "order.payment_recorded", order_id, {
        "order": order, "payment": {"id": str(uuid.uuid4()), "amount": "1200.50", "paid_on": today.isoformat()}})

    [report] = ann.get("/daily-reports", query_string={"date": today.isoformat()}).json["items"]
    assert report["owner_id"] == "ann" and report["status"] == "draft"
    expected = _expected_draft("ann", today)
    assert _comparable(report["summary"]) == expected
    assert expected["calls"] == 2 and expected["new_leads_by_source"] == {"referral": 1}  # not the call on Bob's
    assert expected["orders_confirmed"] == {"count": 1, "amount": "5000.00"} and expected["collected"] == "1200.50"
    assert expected["stage_moves"][0]["to"] == "needs_analysis"
    # The manager sees the team's reports of the day (Ann's, and one for himself); Bob sees only his.
    team = mgr.get("/daily-reports", query_string={"date": today.isoformat()}).json["items"]
    assert {r["owner_id"] for r in team} == {"ann", "mgr-e"}
    assert [r["owner_id"] for r in bob.get("/daily-reports", query_string={"date": today.isoformat()}).json["items"]] \
        == ["bob"]
    assert bob.get(f"/daily-reports/{report['id']}").status_code == 404
    assert bob.post(f"/daily-reports/{report['id']}/review", json={"comment": "x"}).status_code == 403  # a rep
    west = opps.as_("mgr-w", "manager", teams=["west"], manages=["west"])
    assert west.post(f"/daily-reports/{report['id']}/review", json={"comment": "x"}).status_code == 404
    assert west.get(f"/daily-reports/{report['id']}").status_code == 404

    etag = ann.get(f"/daily-reports/{report['id']}").headers["ETag"]
    r = ann.patch(f"/daily-reports/{report['id']}", json={"notes": "good day", "market": [
        {"competitor": "Huawei", "product_category": "servers", "account_id": account["id"], "price_heard": "98000",
         "note": "quoted 15% under us"}]}, headers={"If-Match": etag})
    assert r.status_code == 200, r.json
    assert mgr.patch(f"/daily-reports/{report['id']}", json={"notes": "x"},
                     headers={"If-Match": r.headers["ETag"]}).status_code == 403
    assert mgr.post(f"/daily-reports/{report['id']}/review", json={"comment": "early"}).status_code == 409
    submitted = ann.post(f"/daily-reports/{report['id']}/submit")
    assert submitted.status_code == 200 and submitted.json["status"] == "submitted"
    frozen = submitted.json["summary"]
    assert ann.patch(f"/daily-reports/{report['id']}", json={"notes": "edited"},
                     headers={"If-Match": submitted.headers["ETag"]}).status_code == 409
    assert ann.post(f"/daily-reports/{report['id']}/submit").status_code == 409
    ann.post(f"/accounts/{account['id']}/activities", json={"kind": "call", "summary": "after submitting"})
    assert ann.get(f"/daily-reports/{report['id']}").json["summary"] == frozen  # frozen as submitted
    assert ann.post(f"/daily-reports/{report['id']}/review", json={"comment": "self"}).status_code == 403
    for _ in range(2):  # a retry under the same key is the first answer, not a second comment
        reviewed = mgr.post(f"/daily-reports/{report['id']}/review", json={"comment": "push the demo"},
                            headers={"Idempotency-Key": f"review-{report['id']}"})
    assert reviewed.status_code == 200 and reviewed.json["status"] == "reviewed"
    assert [c["body"] for c in reviewed.json["comments"]] == ["push the demo"] and reviewed.json["reviewed_by"] == "mgr-e"
    assert [e["data"]["manager_id"] for e in _published("daily_report.submitted")] == ["mgr-e"]
    assert [e["data"]["comment"] for e in _published("daily_report.reviewed")] == ["push the demo"]
    future = today + dt.timedelta(days=1)
    assert ann.get("/daily-reports", query_string={"date": future.isoformat()}).status_code == 422
    assert ann.get("/daily-reports").status_code == 400  # which day
    long_ago = (today - dt.timedelta(days=400)).isoformat()
    assert ann.get("/daily-reports", query_string={"date": long_ago}).json["items"] == []  # no drafts made for it


def test_market_notes_are_searchable_and_a_hidden_account_stays_hidden(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    bob = opps.as_("bob", "rep", teams=["west"])
    boss = opps.as_("gm", "executive")
    today = _today()
    west_account = _account(bob, name="West Secret Co", region="西北")
    # Ann helps on Bob's account (its virtual team): she may tag it; her manager may not see it.
    assert bob.put(f"/accounts/{west_account['id']}/team", json={"members": [{"user_id": "ann", "role": "sales"}]}
                   ).status_code == 200
    own = _account(ann, name="East Co", region="华东")
    [report] = ann.get("/daily-reports", query_string={"date": today.isoformat()}).json["items"]
    etag = ann.get(f"/daily-reports/{report['id']}").headers["ETag"]
    for hidden in (str(uuid.uuid4()), _account(opps.as_("cy", "rep", teams=["west"]), name="Cy Co")["id"]):
        r = ann.patch(f"/daily-reports/{report['id']}", json={"market": [{"account_id": hidden, "note": "x"}]},
                      headers={"If-Match": etag})
        assert r.status_code == 422 and r.json["errors"] == {"market": {"0": {"account_id": ["unknown account"]}}}
    r = ann.patch(f"/daily-reports/{report['id']}", json={"market": [
        {"competitor": "Huawei Cloud", "product_category": "Servers", "account_id": west_account["id"], "note": "a"},
        {"competitor": "Inspur", "product_category": "storage", "account_id": own["id"], "price_heard": "10.5",
         "note": "b"}]}, headers={"If-Match": etag})
    assert r.status_code == 200, r.json
    assert mgr.get(f"/daily-reports/{report['id']}").json["market"][0]["account_id"] is None
    assert mgr.get("/market-notes").json["items"] == []  # not submitted yet
    ann.post(f"/daily-reports/{report['id']}/submit")

    def search(who, **query):
        r = who.get("/market-notes", query_string=query)
        assert r.status_code == 200, r.json
        return r.json["items"]

    assert [n["note"] for n in search(mgr, competitor="huawei")] == ["a"]
    [note] = search(mgr, competitor="HUAWEI")
    assert note["account_id"] is None and note["region"] is None  # the west account is not his to see
    assert search(mgr, region="西北") == [] and [n["note"] for n in search(boss, region="西北")] == ["a"]
    assert [n["note"] for n in search(mgr, region="华东")] == ["b"]
    assert search(boss, competitor="huawei")[0]["account_id"] == west_account["id"]
    assert [n["note"] for n in search(ann, product_category="servers")] == ["a"]
    assert search(bob, competitor="huawei") == []  # Ann's report is not Bob's to read
    period = f"{today.year}-{today.month:02d}"
    assert len(search(boss, period=period)) == 2 and search(boss, period="1999") == []
    assert search(mgr, competitor="%") == []  # a wildcard is a character here
    for bad in ({"period": "2026-13"}, {"limit": "0"}, {"colour": "red"}):
        assert mgr.get("/market-notes", query_string=bad).status_code == 400, bad


def test_weekly_progress_equals_a_brute_force_recomputation(opps):
    """Four reps of one team and one of another over two weeks of raw records (as the events and
    the API would have left them): the report for the manager, by rep and by team, and for a rep."""
    reps = ["r1", "r2", "r3", "r4"]
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    for rep in reps:
        opps.as_(rep, "rep", teams=["east"])
    other = opps.as_("w1", "rep", teams=["west"])
    account = _account(other)  # an account row for the foreign keys; whose it is does not matter here
    account["id"] = uuid.UUID(account["id"])
    rng = random.Random(18)
    monday = dt.date.fromisocalendar(2026, 47, 1)
    days = [monday + dt.timedelta(days=n) for n in range(14)]
    with _uow() as uow:
        for owner, team in [*[(r, "east") for r in reps], ("w1", "west")]:
            for day in days:
                start, _ = day_bounds(day)
                for n in range(rng.randint(0, 4)):
                    status = rng.choice(["planned", "done", "done", "missed", "rescheduled"])
                    planned = start + dt.timedelta(hours=9 + n)
                    uow.session.add(Visit(id=uuid.uuid4(), owner_id=owner, team_id=team, account_id=account["id"],
                                          kind="visit", planned_at=planned, day=day, status=status,
                                          checked_in_at=planned if status == "done" else None,
                                          created_by=owner, created_at=planned, updated_at=planned, version=1))
                moment = start + dt.timedelta(hours=rng.randint(0, 23))
                if rng.random() < 0.5:
                    uow.session.add(KnownLead(id=uuid.uuid4(), owner_id=owner, team_id=team, source="web",
                                              status="new", version=1, created_at=moment))
                if rng.random() < 0.4:
                    uow.session.add(PipelineChange(id=uuid.uuid4(), opportunity_id=uuid.uuid4(), owner_id=owner,
                                                   team_id=team, delta=Decimal(rng.randint(-500, 900)),
                                                   changed_at=moment))
                if rng.random() < 0.3:
                    uow.session.add(OrderFact(order_id=str(uuid.uuid4()), account_id=account["id"], owner_id=owner,
                                              team_id=team, total=Decimal(rng.randint(1, 999)), confirmed_at=moment,
                                              cancelled_at=moment if rng.random() < 0.2 else None))
                if rng.random() < 0.3:
                    uow.session.add(PaymentFact(payment_id=str(uuid.uuid4()), order_id="o", owner_id=owner,
                                                team_id=team, amount=Decimal(rng.randint(1, 99)), paid_on=day))
                if rng.random() < 0.3:
                    uow.session.add(StageMove(id=uuid.uuid4(), opportunity_id=uuid.uuid4(), account_id=account["id"],
                                              owner_id=owner, team_id=team, from_stage="a", to_stage="b",
                                              moved_at=moment))
        for owner in [*reps, "w1"]:  # what a check-in, a stage move and an order keep up as they happen
            visit_progress.refresh(uow, owner, account["id"])
        uow.commit()

    def brute(key_of) -> dict:
        with _uow() as uow:
            s = uow.session
            all_visits = list(s.execute(select(Visit)).scalars())
            leads = list(s.execute(select(KnownLead)).scalars())
            changes = list(s.execute(select(PipelineChange)).scalars())
            orders = list(s.execute(select(OrderFact)).scalars())
            paid = list(s.execute(select(PaymentFact)).scalars())
            moves = list(s.execute(select(StageMove)).scalars())
            deals = list(s.execute(select(Opportunity)).scalars())
        out: dict = defaultdict(dict)
        for week_start in (monday, monday + dt.timedelta(days=7)):
            week_end = week_start + dt.timedelta(days=6)
            start, end = day_bounds(week_start, week_end)
            keys = {key_of(r) for r in [*all_visits, *leads, *changes, *orders, *paid, *deals] if key_of(r) is not None}
            for k in keys:
                vs = [v for v in all_visits if key_of(v) == k and week_start <= v.day <= week_end]
                done = [v for v in vs if v.status == "done"]
                # What followed: the rep's own moves and orders on the account, of the visit's team.
                effective = [v for v in done if any(
                    v.checked_in_at < t <= v.checked_in_at + dt.timedelta(days=14)
                    for t in [m.moved_at for m in moves if (m.owner_id, m.account_id, m.team_id)
                              == (v.owner_id, v.account_id, v.team_id)]
                    + [o.confirmed_at for o in orders if (o.owner_id, o.account_id, o.team_id)
                       == (v.owner_id, v.account_id, v.team_id) and o.cancelled_at is None])]
                counted = [o for o in orders if key_of(o) == k and o.cancelled_at is None and start <= o.confirmed_at < end]
                out[k][week_start] = {
                    "visits_planned": len([v for v in vs if v.status != "rescheduled"]),
                    "visits_done": len(done), "visits_missed": len([v for v in vs if v.status == "missed"]),
                    "new_leads": len([x for x in leads if key_of(x) == k and x.status != "deleted"
                                      and start <= x.created_at < end]),
                    "pipeline_change": sum((c.delta for c in changes if key_of(c) == k and start <= c.changed_at < end),
                                           Decimal(0)),
                    "orders": (len(counted), sum((o.total for o in counted), Decimal(0))),
                    "collected": sum((p.amount for p in paid if key_of(p) == k and week_start <= p.paid_on <= week_end),
                                     Decimal(0)),
                    "visits_effective": len(effective),
                    "visit_effectiveness": round(len(effective) / len(done), 4) if done else None}
        return {k: v for k, v in out.items() if any(any(x not in (0, None, Decimal(0), (0, Decimal(0)))
                                                        for x in w.values()) for w in v.values())}

    def reported(who, group_by) -> dict:
        r = who.get("/reports/weekly-progress", query_string={"week": "2026-W48", "group_by": group_by})
        assert r.status_code == 200, r.json
        out = {}
        for group in r.json["groups"]:
            out[group["key"]] = {dt.date.fromisocalendar(int(w["week"][:4]), int(w["week"][6:]), 1): {
                "visits_planned": w["visits_planned"], "visits_done": w["visits_done"],
                "visits_missed": w["visits_missed"], "new_leads": w["new_leads"],
                "pipeline_change": Decimal(w["pipeline_change"]),
                "orders": (w["orders"]["count"], Decimal(w["orders"]["amount"])), "collected": Decimal(w["collected"]),
                "visits_effective": w["visits_effective"], "visit_effectiveness": w["visit_effectiveness"]}
                for w in group["weeks"]}
        return out

    def only(key_of, keep):
        return lambda r: key_of(r) if keep(r) else None

    by_owner = brute(only(lambda r: r.owner_id, lambda r: r.team_id == "east"))
    assert reported(mgr, "owner") == by_owner and set(by_owner) == set(reps)
    assert reported(mgr, "team") == brute(only(lambda r: r.team_id, lambda r: r.team_id == "east"))
    assert reported(opps.as_("r1", "rep", teams=["east"]), "owner") == {"r1": by_owner["r1"]}
    assert set(reported(opps.as_("gm", "executive"), "owner")) == {*reps, "w1"}
    assert set(reported(other, "team")) == {"west"}
    for bad in ({"week": "2026-W54"}, {"week": "2026-49"}, {"week": "2026-W48", "group_by": "region"},
                {"week": "2026-W48", "weeks": 0}):
        assert mgr.get("/reports/weekly-progress", query_string=bad).status_code == 400, bad


def test_a_deals_life_writes_its_stage_moves_and_pipeline_changes(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    account = _account(ann)
    deal = ann.post("/opportunities", json={"account_id": account["id"], "name": "D", "amount": "100.00",
                                            "expected_close_date": "2027-06-30"}).json
    r = ann.patch(f"/opportunities/{deal['id']}", json={"amount": "250.00"}, headers={"If-Match": f'"v{deal["version"]}"'})
    assert r.status_code == 200
    r = _advance(ann, deal)
    assert r.status_code == 200
    assert ann.post(f"/opportunities/{deal['id']}/lose", json={"reason": "price"},
                    headers={"If-Match": r.headers["ETag"]}).status_code == 200
    with _uow() as uow:
        changes = uow.session.execute(select(PipelineChange.owner_id, PipelineChange.delta)
                                      .order_by(PipelineChange.changed_at, PipelineChange.delta)).all()
        moves = uow.session.execute(select(StageMove.from_stage, StageMove.to_stage).order_by(StageMove.moved_at)).all()
    assert sorted(d for _o, d in changes) == [Decimal("-250.00"), Decimal("-100.00"), Decimal("100.00"),
                                              Decimal("250.00")]
    assert {o for o, _d in changes} == {"ann"} and sum(d for _o, d in changes) == 0
    assert moves == [("qualification", "needs_analysis"), ("needs_analysis", "lost")]


def test_a_handover_gives_the_leavers_planned_visits_to_the_successor(opps):
    from services.opportunities import handover

    ann = opps.as_("ann", "rep", teams=["east"])
    cy = opps.as_("cy", "rep", teams=["east"])
    account = _account(ann)
    planned = ann.post("/visits", json={"account_id": account["id"], "planned_at": _at(_today(), 23)}).json
    done = ann.post("/visits", json={"account_id": account["id"], "planned_at": _at(_today(), 9)}).json
    assert ann.post(f"/visits/{done['id']}/check-in", json={"outcome": "ok"}).status_code == 200
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", "ann", {
            "handover_id": "h-visits", "from_user_id": "ann", "to_user_id": "cy"}, source="gateway"))
        uow.commit()
    assert cy.get(f"/visits/{planned['id']}").json["owner_id"] == "cy"  # still to do: the successor's
    assert ann.get(f"/visits/{done['id']}").json["owner_id"] == "ann"  # done: stays the leaver's record
    [answer] = _published("handover.completed")
    assert answer["data"]["visits"] == 1
    assert [e["data"]["visit"]["owner_id"] for e in _published("visit.planned")][-1] == "cy"


def _attainment(subject_type, subject_id, day: dt.date, actual: str, target="10000.00", period="2026-11"):
    _deliver(day_facts.ORDER_HANDLERS, "performance.attainment", f"{subject_type}:{subject_id}", {"attainment": {
        "subject_type": subject_type, "subject_id": subject_id, "metric": "revenue", "period": period,
        "day": day.isoformat(), "target": target, "actual": actual,
        "attainment": str((Decimal(actual) * 100 / Decimal(target)).quantize(Decimal("0.1")))}})


def test_weekly_progress_shows_target_attainment_as_the_week_ended_to_whom_may_see_it(opps):
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    r1, r2 = opps.as_("r1", "rep", teams=["east"]), opps.as_("r2", "rep", teams=["east"])
    west = opps.as_("mgr-w", "manager", teams=["west"], manages=["west"])
    monday = dt.date.fromisocalendar(2026, 48, 1)  # 23-29 November
    for offset, actual in ((0, "1000.00"), (4, "2500.00"), (7, "4000.00")):  # the third is the next week's
        _attainment("user", "r1", monday + dt.timedelta(days=offset), actual)
    _attainment("team", "east", monday + dt.timedelta(days=6), "7000.00", target="20000.00")
    _attainment("user", "w9", monday + dt.timedelta(days=6), "1.00")  # another team's rep
    _attainment("user", "r1", monday + dt.timedelta(days=4), "2500.00")  # a replay changes nothing

    def attainment(who, group_by="owner"):
        r = who.get("/reports/weekly-progress", query_string={"week": "2026-W48", "group_by": group_by, "weeks": 1})
        assert r.status_code == 200, r.json
        return {g["key"]: g["weeks"][0]["attainment"] for g in r.json["groups"] if g["weeks"][0]["attainment"]}

    expected_r1 = [{"metric": "revenue", "period": "2026-11", "target": "10000.00", "actual": "2500.00",
                    "attainment": "25.0", "as_of": (monday + dt.timedelta(days=4)).isoformat()}]
    assert attainment(mgr) == {"r1": expected_r1}  # the last of the week, not the next week's
    assert attainment(r1) == {"r1": expected_r1} and attainment(r2) == {}
    assert attainment(mgr, "team") == {"east": [{"metric": "revenue", "period": "2026-11", "target": "20000.00",
                                                 "actual": "7000.00", "attainment": "35.0",
                                                 "as_of": (monday + dt.timedelta(days=6)).isoformat()}]}
    assert attainment(r1, "team") == {}  # a team's total is the teammates' figures too
    assert attainment(west) == {} and attainment(west, "team") == {}
    assert set(attainment(opps.as_("gm", "executive"))) == {"r1", "w9"}


def test_a_manager_is_shown_what_his_rep_earned_in_his_teams_and_a_rep_no_margin(opps):
    mgr = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    r1 = opps.as_("r1", "rep", teams=["east"])  # moved from west this month: west's credit is not east's to see
    day = dt.date.fromisocalendar(2026, 48, 3)
    _deliver(day_facts.ORDER_HANDLERS, "performance.attainment", "user:r1", {"attainment": {
        "subject_type": "user", "subject_id": "r1", "metric": "revenue", "period": "2026-11", "day": day.isoformat(),
        "target": "10000.00", "actual": "7000.00", "attainment": "70.0",
        "by_team": [{"team_id": "east", "actual": "1500.00"}, {"team_id": "west", "actual": "5500.00"}]}})
    with _uow() as uow:
        row = uow.session.get(AttainmentSnapshot, ("user", "r1", "revenue", "2026-11", day))
        assert row.by_team == {"east": "1500.00", "west": "5500.00"}
    _deliver(day_facts.ORDER_HANDLERS, "performance.attainment", "user:r1", {"attainment": {
        "subject_type": "user", "subject_id": "r1", "metric": "gross_margin", "period": "2026-11",
        "day": day.isoformat(), "target": "3000.00", "actual": "900.00", "attainment": "30.0"}})

    def shown(who):
        r = who.get("/reports/weekly-progress", query_string={"week": "2026-W48", "weeks": 1})
        return {(a["metric"], a["actual"], a["attainment"]) for g in r.json["groups"] if g["key"] == "r1"
                for a in g["weeks"][0]["attainment"]}

    assert shown(mgr) == {("revenue", "1500.00", "15.0"), ("gross_margin", "900.00", "30.0")}
    assert shown(r1) == {("revenue", "7000.00", "70.0")}  # his own, whole; no margin
    assert ("revenue", "7000.00", "70.0") in shown(opps.as_("gm", "executive"))
    # Odd figures are refused with the reason, not retried.
    for bad in ({"period": "2026-11\n"}, {"actual": "NaN"}, {"target": "1" * 20}, {"subject_id": "a\x00b"}):
        with pytest.raises(Reject):
            _deliver(day_facts.ORDER_HANDLERS, "performance.attainment", "user:r1", {"attainment": {
                "subject_type": "user", "subject_id": "r1", "metric": "revenue", "period": "2026-11",
                "day": day.isoformat(), "target": "10.00", "actual": "1.00", "attainment": "10.0", **bad}})
