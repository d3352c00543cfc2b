"""The opportunities API in-process (Flask test client) on SQLite and PostgreSQL: migrations,
visibility, contacts, the stages document, idempotency, ownership, expenses, and the consumers'
handlers (lead.converted, order revenue and tiers) against a real database."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crmkit.consumer import Reject
from crmkit.db import utcnow
from crmkit.events import new_event
from services.opportunities import bootstrap, conversion, tiering
from services.opportunities.db import (
    Account,
    AccountRevenue,
    Base,
    Contact,
    DirectoryTeam,
    DirectoryUser,
    Opportunity,
)
from tests.integration.service_client import assert_migrations_match, deliver, service_client

CLOSE = "2026-12-15"


@pytest.fixture
def opps(database_url, topic_prefix, monkeypatch):
    with service_client(bootstrap, "opportunities", database_url, topic_prefix, monkeypatch) as client:
        yield client


def _uow():
    return bootstrap.context().db.uow()


def _directory(*users: tuple[str, str, str | None], teams: dict[str, str] | None = None) -> None:
    with _uow() as uow:
        for user_id, role, team in users:
            uow.session.add(DirectoryUser(id=user_id, role=role, team_id=team, active=True))
        for team_id, manager in (teams or {}).items():
            uow.session.add(DirectoryTeam(id=team_id, manager_id=manager))
        uow.commit()


def _deal(client, *, name="Acme", amount="1000.00", **extra):
    account = client.post("/accounts", json={"name": name, "region": "East"})
    assert account.status_code == 201, account.json
    r = client.post("/opportunities", json={"account_id": account.json["id"], "name": "Deal", "amount": amount,
                                             "expected_close_date": CLOSE, **extra})
    assert r.status_code == 201, r.json
    return r.json


def test_migrations_match_the_models(database_url):
    assert_migrations_match(bootstrap.MIGRATIONS, Base.metadata, database_url)


def test_visibility_and_route_roles(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    bob = opps.as_("bob", "rep", teams=["west"])
    east = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    anns = _deal(ann)
    bobs = _deal(bob, name="Bob's customer")
    assert {o["id"] for o in ann.get("/opportunities").json["items"]} == {anns["id"]}
    assert {o["id"] for o in east.get("/opportunities").json["items"]} == {anns["id"]}
    assert {o["id"] for o in opps.as_("x", "executive").get("/opportunities").json["items"]} == {anns["id"], bobs["id"]}
    assert opps.as_("svc", "service").get("/opportunities").json["items"] == []
    assert opps.as_("mk", "marketing").get("/opportunities").status_code == 403
    assert opps.as_("mk", "marketing").get("/reports/opportunity-funnel").json["opportunities"] == 2
    assert bob.get(f"/opportunities/{anns['id']}").status_code == 404
    assert bob.get(f"/accounts/{anns['account_id']}").status_code == 404
    assert ann.put("/pipeline/stages", json={"stages": []}).status_code == 403


def test_the_first_contact_is_primary_and_a_new_primary_demotes_the_old(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    account = ann.post("/accounts", json={"name": "Contacts Ltd"}).json["id"]
    first = ann.post(f"/accounts/{account}/contacts", json={"name": "First"}).json
    second = ann.post("/contacts", json={"account_id": account, "name": "Second"}).json
    assert (first["is_primary"], second["is_primary"]) == (True, False)
    r = ann.patch(f"/contacts/{second['id']}", json={"is_primary": True}, headers={"If-Match": f'"v{second["version"]}"'})
    assert r.status_code == 200 and r.json["is_primary"] is True
    listed = {c["name"]: c["is_primary"] for c in ann.get(f"/accounts/{account}/contacts").json["items"]}
    assert listed == {"First": False, "Second": True}
    assert ann.patch(f"/contacts/{first['id']}", json={"name": "x"}, headers={"If-Match": '"v1"'}).status_code == 412
    assert ann.delete(f"/contacts/{first['id']}").status_code == 204
    assert ann.get(f"/contacts/{first['id']}").status_code == 404


def test_the_stages_document_is_admin_only_versioned_and_cannot_strand_deals(opps):
    admin, ann = opps.as_("root", "admin"), opps.as_("ann", "rep", teams=["east"])
    current = admin.get("/pipeline/stages")
    assert current.headers["ETag"] == '"v0"' and current.json["stages"][0]["key"] == "qualification"
    stages = [{"key": "discovery", "label": "Discovery", "probability": 15,
               "checklist": [{"key": "call_done", "label": "First call", "required": True}]},
              {"key": "proposal", "label": "Proposal", "probability": 50}]
    assert admin.put("/pipeline/stages", json={"stages": stages}).status_code == 428
    deal = _deal(ann)  # in "qualification", which the new document drops
    r = admin.put("/pipeline/stages", json={"stages": stages}, headers={"If-Match": '"v0"'})
    assert r.status_code == 409 and r.json["errors"]["stages"] == ["qualification: 1 open"]
    assert ann.post(f"/opportunities/{deal['id']}/lose", json={"reason": "moved on"}).status_code == 200
    r = admin.put("/pipeline/stages", json={"stages": stages}, headers={"If-Match": '"v0"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"v1"'
    fresh = _deal(ann, name="Second customer")
    assert (fresh["stage"], fresh["probability"], [i["key"] for i in fresh["checklist"]]) == \
        ("discovery", 15, ["call_done"])
    bad = [{"key": "a", "label": "A", "probability": 50}, {"key": "b", "label": "B", "probability": 10}]
    assert admin.put("/pipeline/stages", json={"stages": bad}, headers={"If-Match": '"v1"'}).status_code == 422


def test_an_idempotency_key_replays_the_first_creation(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    account = ann.post("/accounts", json={"name": "Once Ltd"}).json["id"]
    body = {"account_id": account, "name": "Once", "amount": "10.00"}
    first = ann.post("/opportunities", json=body, headers={"Idempotency-Key": "k-1"})
    again = ann.post("/opportunities", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and first.json["id"] == again.json["id"]
    assert len(ann.get("/opportunities").json["items"]) == 1


def test_a_saved_deal_is_answered_as_saved_even_when_its_details_cannot_be_read(opps, monkeypatch):
    """The deal commits, then reading its team, checklist and collisions fails: the answer is still
    201 with the deal (a client told 500 would retry and create it twice)."""
    from sqlalchemy.exc import OperationalError

    from services.opportunities import deals

    ann = opps.as_("ann", "rep", teams=["east"])
    account = ann.post("/accounts", json={"name": "Saved Ltd"}).json["id"]

    real, calls = deals.render_opportunities, []

    def fails_after_the_commit(uow, opportunities):  # the event does not render: only the answer does
        calls.append(1)
        raise OperationalError("select", {}, Exception("the database went away"))

    monkeypatch.setattr(deals, "render_opportunities", fails_after_the_commit)
    r = ann.post("/opportunities", json={"account_id": account, "name": "Saved", "amount": "10.00"},
                 headers={"Idempotency-Key": "saved-1"})
    assert r.status_code == 201 and r.json["name"] == "Saved" and r.json["collisions"] == []
    assert len(calls) == 1
    monkeypatch.setattr(deals, "render_opportunities", real)
    opps_now = ann.get("/opportunities").json["items"]
    assert [o["id"] for o in opps_now] == [r.json["id"]]
    again = ann.post("/opportunities", json={"account_id": account, "name": "Saved", "amount": "10.00"},
                     headers={"Idempotency-Key": "saved-1"})
    assert again.status_code == 201 and again.json["id"] == r.json["id"]


def test_owners_are_given_only_by_leaders_and_only_within_their_teams(opps):
    _directory(("amy", "rep", "east"), ("bo", "rep", "west"))
    ann, east = opps.as_("ann", "rep", teams=["east"]), opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    account = east.post("/accounts", json={"name": "Given Ltd"}).json["id"]
    given = east.post("/opportunities", json={"account_id": account, "name": "For Amy", "amount": "5.00",
                                               "owner_id": "amy"})
    assert given.status_code == 201 and (given.json["owner_id"], given.json["team_id"]) == ("amy", "east")
    assert east.post("/opportunities", json={"account_id": account, "name": "x", "amount": "5.00",
                                              "owner_id": "bo"}).status_code == 403
    assert east.post("/opportunities", json={"account_id": account, "name": "x", "amount": "5.00",
                                              "owner_id": "nobody"}).status_code == 422
    own = ann.post("/accounts", json={"name": "Ann's"}).json["id"]
    assert ann.post("/opportunities", json={"account_id": own, "name": "x", "amount": "5.00",
                                             "owner_id": "amy"}).status_code == 403


def test_expenses_add_up_in_the_opportunity_and_the_pipeline_report(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    deal = _deal(ann)
    for amount in ("100.10", "23.45"):
        r = ann.post(f"/opportunities/{deal['id']}/expenses",
                     json={"category": "travel", "amount": amount, "incurred_on": "2026-11-02"})
        assert r.status_code == 201
    assert ann.get(f"/opportunities/{deal['id']}").json["expense_total"] == "123.55"
    assert [e["amount"] for e in ann.get(f"/opportunities/{deal['id']}/expenses").json["items"]] == ["23.45", "100.10"]
    row = ann.get("/reports/pipeline?group_by=owner").json["rows"][0]
    assert (row["key"], row["expenses"], row["amount"]) == ("ann", "123.55", "1000.00")
    assert ann.post(f"/opportunities/{deal['id']}/expenses",
                    json={"category": "yacht", "amount": "1.00", "incurred_on": "2026-11-02"}).status_code == 422


def test_an_account_with_open_deals_is_not_deleted_and_activities_roll_up(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    deal = _deal(ann)
    account = deal["account_id"]
    ann.post(f"/opportunities/{deal['id']}/activities", json={"kind": "demo", "summary": "on the deal"})
    ann.post(f"/accounts/{account}/activities", json={"kind": "call", "summary": "on the account"})
    assert {a["summary"] for a in ann.get(f"/accounts/{account}/activities").json["items"]} == \
        {"on the deal", "on the account"}
    assert [a["summary"] for a in ann.get(f"/opportunities/{deal['id']}/activities").json["items"]] == ["on the deal"]
    assert ann.delete(f"/accounts/{account}").status_code == 409
    assert ann.post(f"/opportunities/{deal['id']}/win", json={}).status_code == 200
    assert ann.delete(f"/accounts/{account}").status_code == 204
    assert ann.get(f"/accounts/{account}").status_code == 404


def test_bad_input_is_a_clear_4xx(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    account = ann.post("/accounts", json={"name": "Strict Ltd"}).json["id"]
    for body in ({"account_id": account, "name": "x", "amount": "-1.00"},
                 {"account_id": account, "name": "x", "amount": "1.00", "status": "won"},
                 {"account_id": account, "name": "x", "amount": "1.00",
                  "products": [{"sku": "A", "qty": 1, "unit_price": "1.00"}, {"sku": "A", "qty": 2, "unit_price": "1.00"}]},
                 {"account_id": str(uuid.uuid4()), "name": "x", "amount": "1.00"}):
        r = ann.post("/opportunities", json=body)
        assert r.status_code in (404, 422) and r.headers["Content-Type"] == "application/problem+json", (body, r.json)
    assert ann.get("/opportunities?sort=-nonsense").status_code == 400
    assert ann.get("/opportunities?cursor=garbage").status_code == 400
    assert ann.get("/reports/forecast").status_code == 400  # the period is required
    assert ann.get("/reports/forecast?period=2026-Q5").status_code == 400


# ---- the consumers' handlers, on the real database -------------------------------------------------------------
def _converted(account_id=None, *, existing=False, version=1, **overrides):
    data = {"owner_id": "ann", "team_id": "east",
            "account": {"id": str(account_id or uuid.uuid4()), "existing": existing, "name": "Converted Ltd",
                        "type": "b2b", "region": "East"},
            "contact": {"id": str(uuid.uuid4()), "name": "Zhao", "is_primary": True},
            "opportunity": {"id": str(uuid.uuid4()), "name": "From a lead", "amount": "700.00", "currency": "CNY",
                            "expected_close_date": CLOSE, "source_lead_id": str(uuid.uuid4())}}
    data.update(overrides)
    event = new_event("lead.converted", uuid.uuid4(), data, source="leads", version=version)
    event["time"] = utcnow()
    return event


def _apply(event):
    with _uow() as uow:
        conversion.apply_lead_converted(uow, bootstrap.context().settings, event)
        uow.commit()


def test_lead_converted_creates_once_and_attaches_to_an_existing_account(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    event = _converted()
    _apply(event)
    _apply({**event, "id": str(uuid.uuid4())})  # the same conversion again: nothing more
    with _uow() as uow:
        assert uow.session.query(Opportunity).count() == 1 and uow.session.query(Contact).count() == 1
    account_id = event["data"]["account"]["id"]
    _apply(_converted(account_id, existing=True, contact={"id": str(uuid.uuid4()), "name": "Qian", "is_primary": True}))
    contacts = {c["name"]: c["is_primary"] for c in ann.get(f"/accounts/{account_id}/contacts").json["items"]}
    assert contacts == {"Zhao": True, "Qian": False}  # the existing account keeps its primary contact
    assert len(ann.get(f"/opportunities?account_id={account_id}").json["items"]) == 2


@pytest.mark.parametrize("bad", [
    _converted(version=2),
    _converted(owner_id=None),
    _converted(opportunity={"id": "not-a-uuid", "name": "x", "amount": "1.00", "currency": "CNY"}),
    _converted(account=None),
])
def test_lead_converted_that_cannot_be_applied_is_rejected_with_a_reason(opps, bad):
    with pytest.raises(Reject) as rejected, _uow() as uow:
        deliver(conversion.handlers(bootstrap.context().settings), uow, bad)
    assert str(rejected.value)


def _order(kind, order_id, account_id, total, *, days_ago=0):
    event = new_event(kind, order_id, {"order": {"id": order_id, "account_id": str(account_id), "total": total}},
                      source="orders")
    event["time"] = utcnow() - dt.timedelta(days=days_ago)
    with _uow() as uow:
        deliver(tiering.ORDER_HANDLERS, uow, event)
        uow.commit()


def _recompute():
    with _uow() as uow:
        changed = tiering.recompute(uow, bootstrap.context().settings)
        uow.commit()
    return changed


def test_tiers_come_from_trailing_twelve_months_of_orders(opps):
    exec_ = opps.as_("boss", "executive")
    ids = [exec_.post("/accounts", json={"name": f"T{i}"}).json["id"] for i in range(4)]
    _order("order.confirmed", "o1", ids[0], "800.00")
    _order("order.paid", "o1", ids[0], "850.00")       # the same order, paid: counted once, at its latest amount
    _order("order.confirmed", "o2", ids[1], "100.00")
    _order("order.confirmed", "o3", ids[2], "50.00")
    _order("order.confirmed", "o4", ids[3], "9000.00", days_ago=400)  # outside the window
    assert _recompute() == {ids[0]: "A", ids[1]: "B", ids[2]: "C"}
    assert [exec_.get(f"/accounts/{i}").json["tier"] for i in ids] == ["A", "B", "C", "unranked"]
    _order("order.cancelled", "o1", ids[0], "850.00")
    # 100 and 50 left: the second account starts at 0% of revenue, the third at 67%; both are A.
    assert _recompute() == {ids[0]: "unranked", ids[1]: "A", ids[2]: "A"}
    assert _recompute() == {}  # nothing new: nothing changes, nothing is published
    with pytest.raises(Reject), _uow() as uow:
        deliver(tiering.ORDER_HANDLERS, uow, {**new_event("order.paid", "x", {"order": {"id": "x"}}, source="orders"),
                                   "time": utcnow()})


def test_revenue_sums_are_exact_decimals(opps):
    with _uow() as uow:
        account = Account(id=uuid.uuid4(), name="Exact", type="b2b", tier="unranked", owner_id="a", team_id="t",
                          created_by="a", created_at=utcnow(), updated_at=utcnow(), version=1)
        uow.session.add(account)
        uow.commit()
    for i in range(3):
        _order("order.paid", f"x{i}", account.id, "0.10")
    with _uow() as uow:
        total = uow.session.execute(select(func.sum(AccountRevenue.amount))).scalar_one()
    assert Decimal(str(total)).quantize(Decimal("0.01")) == Decimal("0.30")


def _refusals() -> list[dict]:
    outbox = bootstrap.KIT_TABLES["outbox"]
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == "lead.conversion_rejected")
                            .order_by(outbox.c.id))
        return [json.loads(r.payload)["data"] for r in rows]


def test_a_conversion_into_an_account_its_owner_may_not_sell_into_is_refused_back_to_the_lead(opps):
    bob = opps.as_("bob", "rep", teams=["west"])
    opps.as_("ann", "rep", teams=["east"])
    theirs = bob.post("/accounts", json={"name": "Bob's customer"}).json["id"]
    attempts = [_converted(theirs, existing=True),                      # another team's account
                _converted(uuid.uuid4(), existing=True)]                # a client-chosen id: never created
    for event in attempts:
        _apply(event)
    assert bob.delete(f"/accounts/{theirs}").status_code == 204
    attempts.append(_converted(theirs, existing=True, owner_id="bob", team_id="west"))  # deleted meanwhile
    _apply(attempts[-1])
    refused = _refusals()
    assert [r["opportunity_id"] for r in refused] == [e["data"]["opportunity"]["id"] for e in attempts]
    assert [r["lead_id"] for r in refused] == [e["data"]["opportunity"]["source_lead_id"] for e in attempts]
    # One reason for all three: the lead must not tell whether a hidden account exists or was deleted.
    assert {r["reason"] for r in refused} == {conversion.CONVERSION_REFUSED}
    with _uow() as uow:
        assert uow.session.query(Opportunity).count() == 0
        assert uow.session.get(Account, uuid.UUID(attempts[1]["data"]["account"]["id"])) is None


def test_an_accounts_activities_leave_out_deals_the_caller_does_not_see(opps):
    _directory(("amy", "rep", "east"))
    ann, amy = opps.as_("ann", "rep", teams=["east"]), opps.as_("amy", "rep", teams=["east"])
    east = opps.as_("mgr-e", "manager", teams=["east"], manages=["east"])
    account = ann.post("/accounts", json={"name": "Shared customer"}).json["id"]
    amys = east.post("/opportunities", json={"account_id": account, "name": "Amy's deal", "amount": "5.00",
                                             "owner_id": "amy"}).json
    amy.post(f"/opportunities/{amys['id']}/activities", json={"kind": "call", "summary": "amy's negotiation"})
    ann.post(f"/accounts/{account}/activities", json={"kind": "visit", "summary": "ann's visit"})
    assert [a["summary"] for a in ann.get(f"/accounts/{account}/activities").json["items"]] == ["ann's visit"]
    assert {a["summary"] for a in amy.get(f"/accounts/{account}/activities").json["items"]} == \
        {"ann's visit", "amy's negotiation"}  # amy sees the account through her deal
    assert {a["summary"] for a in east.get(f"/accounts/{account}/activities").json["items"]} == \
        {"ann's visit", "amy's negotiation"}


def test_expenses_cannot_push_the_total_past_what_an_amount_holds(opps):
    ann = opps.as_("ann", "rep", teams=["east"])
    deal = _deal(ann)
    big = {"category": "other", "amount": "999999999999.00", "incurred_on": "2026-11-02"}
    assert ann.post(f"/opportunities/{deal['id']}/expenses", json=big).status_code == 201
    r = ann.post(f"/opportunities/{deal['id']}/expenses", json=big)
    assert r.status_code == 422 and "exceed" in r.json["detail"]


def test_another_reps_deal_is_found_however_many_deals_the_owner_has_on_the_customer(opps, monkeypatch):
    from services.opportunities import detection

    monkeypatch.setattr(detection, "CANDIDATES", 3)
    ann, bob = opps.as_("ann", "rep", teams=["east"]), opps.as_("bob", "rep", teams=["west"])
    deal = {"amount": "1000.00", "region": "East", "products": [{"sku": "SW-1", "qty": 1, "unit_price": "1000.00"}]}
    bobs = _deal(bob, name="Acme Systems Co., Ltd.", **deal)
    for _ in range(5):
        _deal(ann, name="ACME System Integrators Ltd", **deal)  # ann's own deals all look alike too
    newest = _deal(ann, name="Acme Systems Ltd", **deal)
    assert bobs["id"] in newest["collisions"]
