"""Orders, approvals and payments (issue 15), in-process on SQLite and PostgreSQL: money computed on
the server, an approval chain that cannot be bypassed, visibility as a SQL condition, won deals
becoming one draft order, and every change an event of its own schema in the outbox."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from crmkit.consumer import Reject
from crmkit.db import utcnow
from crmkit.events import new_event
from services.orders import approvals, bootstrap, handover, won
from services.orders.events import ORDERS
from tests.integration.service_client import deliver, service_client
from tests.support.event_catalogs import problems

ACCOUNT = "2b7f1c2e-0a55-4f0e-8a5e-6f3b9d1c0a01"
OTHER_ACCOUNT = "2b7f1c2e-0a55-4f0e-8a5e-6f3b9d1c0a02"
LATHE = {"sku": "LATHE-5X", "name": "Five-axis lathe", "category": "machines", "list_price": "1000.00",
         "unit_cost": "600.00", "currency": "CNY"}
SPINDLE = {"sku": "SPINDLE-1", "name": "Spindle", "category": "parts", "list_price": "200.00",
           "unit_cost": "50.00", "currency": "CNY"}


@pytest.fixture
def crm(database_url, topic_prefix, monkeypatch):
    with organisation(database_url, topic_prefix, monkeypatch) as client:
        yield client


@contextmanager
def organisation(database_url, topic_prefix, monkeypatch):
    """The orders service in-process, with an organisation: team east (manager mia) under sales
    (manager pat), team west (manager wes); reps ann (east) and bob (west); executive eve; service
    sam on the first account's virtual team; a lathe and a spindle in the catalogue."""
    with service_client(bootstrap, "orders", database_url, topic_prefix, monkeypatch) as client:
        client.directory.put_team("sales", "pat")
        client.directory.put_team("east", "mia", parent="sales")
        client.directory.put_team("west", "wes", parent="sales")
        client.people = {
            "ann": client.as_("ann", "rep", teams=["east"]),
            "bob": client.as_("bob", "rep", teams=["west"]),
            "mia": client.as_("mia", "manager", teams=["east"], manages=["east"]),
            "wes": client.as_("wes", "manager", teams=["west"], manages=["west"]),
            "pat": client.as_("pat", "manager", teams=["sales"], manages=["sales", "east", "west"]),
            "eve": client.as_("eve", "executive"),
            "sam": client.as_("sam", "service"),
            "root": client.as_("root", "admin"),
            "kim": client.as_("kim", "marketing"),
        }
        client.directory.put_team("sales", "pat")
        client.directory.put_team("east", "mia", parent="sales")
        client.directory.put_team("west", "wes", parent="sales")
        admin = client.people["root"]
        for product in (LATHE, SPINDLE):
            assert admin.post("/products", json=product).status_code == 201
        _account(ACCOUNT, owner="ann", team="east", members=[{"user_id": "sam", "role": "after_sales"}])
        _account(OTHER_ACCOUNT, owner="bob", team="west")
        yield client


def _account(account_id: str, *, owner: str, team: str, members=()) -> None:
    from services.orders import accounts

    envelope = new_event("account.created", account_id, {"account": {
        "id": account_id, "name": f"Account {owner}", "owner_id": owner, "team_id": team, "team": list(members),
        "version": 1}}, source="opportunities")
    with bootstrap.context().db.uow() as uow:
        deliver(accounts.ACCOUNT_HANDLERS, uow, envelope)
        uow.commit()


def _events(kind: str) -> list[dict]:
    outbox = bootstrap.KIT_TABLES["outbox"]
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == kind).order_by(outbox.c.id))
        return [json.loads(r.payload) for r in rows]


IN_A_MONTH = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def _order(caller, account=ACCOUNT, **fields):
    body = {"account_id": account, "lines": [{"sku": "LATHE-5X", "qty": 2}, {"sku": "SPINDLE-1", "qty": 5}],
            "delivery_date": IN_A_MONTH, **fields}
    r = caller.post("/orders", json=body)
    assert r.status_code == 201, r.json
    return r.json


def _patch(caller, order, **changes):
    current = caller.get(f"/orders/{order['id']}")
    return caller.patch(f"/orders/{order['id']}", json=changes, headers={"If-Match": current.headers["ETag"]})


def _decide(caller, approval_id, decision, comment=None):
    return caller.post(f"/approvals/{approval_id}/decision", json={"decision": decision, "comment": comment})


def _pending(caller, order_id):
    [approval] = caller.get("/approvals", query_string={"order_id": order_id, "status": "pending"}).json["items"]
    return approval


# ---- money on the server --------------------------------------------------------------------------------
def test_an_order_is_priced_numbered_and_published_by_the_server(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    order = _order(ann, lines=[{"sku": "lathe-5x", "qty": 2, "discount_pct": "5"},
                               {"sku": "SPINDLE-1", "qty": 5, "unit_price": "180.00"}])
    assert re.fullmatch(rf"SO-{utcnow().year}-\d{{6}}", order["number"]) and order["status"] == "draft"
    assert [ln["line_total"] for ln in order["lines"]] == ["1900.00", "900.00"]
    assert order["lines"][0]["sku"] == "LATHE-5X" and order["lines"][0]["list_price"] == "1000.00"
    assert order["total"] == "2800.00" and order["collected"] == "0.00" and order["outstanding"] == "2800.00"
    assert order["owner_id"] == "ann" and order["team_id"] == "east" and order["payment_terms_days"] == 30
    assert order["counts_toward_quota"] is True and order["counted_total"] == "2800.00"
    # Margin and cost are for those who may see them: the rep does not; her manager does.
    assert "gross_margin" not in order and all("unit_cost" not in ln for ln in order["lines"])
    seen = mia.get(f"/orders/{order['id']}").json
    assert seen["gross_margin"] == "1350.00" and seen["lines"][0]["unit_cost"] == "600.00"
    assert _order(ann)["number"] != order["number"]
    [created, _] = _events("order.created")
    assert problems(ORDERS.topic, created) is None and created["data"]["order"]["total"] == "2800.00"


@pytest.mark.parametrize("line, field", [
    ({"sku": "LATHE-5X", "qty": -1}, "qty"),
    ({"sku": "LATHE-5X", "qty": 0}, "qty"),
    ({"sku": "LATHE-5X", "qty": 1.5}, "qty"),
    ({"sku": "LATHE-5X", "qty": 1, "discount_pct": "100.01"}, "discount_pct"),
    ({"sku": "LATHE-5X", "qty": 1, "discount_pct": -3}, "discount_pct"),
    ({"sku": "LATHE-5X", "qty": 1, "discount_pct": "1e2"}, "discount_pct"),
    ({"sku": "LATHE-5X", "qty": 1, "unit_price": 12.5}, "unit_price"),
    ({"sku": "LATHE-5X", "qty": 1, "unit_price": "-1.00"}, "unit_price"),
    ({"sku": "NOPE", "qty": 1}, "sku"),
    ({"sku": "LATHE-5X", "qty": 1_000_000, "unit_price": "999999999999.00"}, "qty"),
    ({"sku": "LATHE-5X", "qty": 1, "owner_id": "bob"}, "owner_id"),
])
def test_bad_lines_are_422_naming_the_line_and_field(crm, line, field):
    r = crm.people["ann"].post("/orders", json={"account_id": ACCOUNT, "lines": [{"sku": "SPINDLE-1", "qty": 1}, line]})
    assert r.status_code == 422, r.json
    assert r.headers["Content-Type"] == "application/problem+json"
    assert field in json.dumps(r.json["errors"]), r.json


def test_more_bad_orders_are_refused_with_the_reason(crm):
    ann, admin = crm.people["ann"], crm.people["root"]
    lines = [{"sku": "SPINDLE-1", "qty": 1}] * 201
    assert ann.post("/orders", json={"account_id": ACCOUNT, "lines": lines}).status_code == 422
    many = ann.post("/orders", json={"account_id": ACCOUNT, "lines": [{"sku": "LATHE-5X", "qty": 1_000_000,
                                                                        "unit_price": "999999.00"}] * 3})
    assert many.status_code == 422 and "total" in many.json["detail"]
    product = admin.get("/products", query_string={"q": "SPINDLE"}).json["items"][0]
    assert admin.delete(f"/products/{product['id']}").status_code == 204
    gone = ann.post("/orders", json={"account_id": ACCOUNT, "lines": [{"sku": "SPINDLE-1", "qty": 1}]})
    assert gone.status_code == 422 and "no longer sold" in json.dumps(gone.json["errors"])
    # An account the caller cannot see is the same 422 as one that does not exist.
    for account in (OTHER_ACCOUNT, str(uuid.uuid4())):
        r = ann.post("/orders", json={"account_id": account, "lines": [{"sku": "LATHE-5X", "qty": 1}]})
        assert r.status_code == 422 and r.json["errors"] == {"account_id": ["no account with this id"]}
    assert ann.post("/orders", json={"account_id": ACCOUNT, "type": "barter"}).status_code == 422
    assert ann.post("/orders", data="{", content_type="application/json").status_code == 400


def test_a_draft_within_policy_is_confirmed_on_submit(crm):
    ann = crm.people["ann"]
    order = _order(ann)
    assert ann.post(f"/orders/{order['id']}/submit").json["status"] == "confirmed"
    assert ann.post(f"/orders/{order['id']}/submit").status_code == 409
    [confirmed] = _events("order.confirmed")
    assert problems(ORDERS.topic, confirmed) is None and confirmed["data"]["order"]["credited_to"] == "ann"
    empty = ann.post("/orders", json={"account_id": ACCOUNT, "delivery_date": IN_A_MONTH}).json
    assert ann.post(f"/orders/{empty['id']}/submit").status_code == 409
    undated = _order(ann, delivery_date=None)
    r = ann.post(f"/orders/{undated['id']}/submit")
    assert r.status_code == 422 and r.json["errors"] == {"delivery_date": ["set it before submitting"]}


# ---- the approval story ---------------------------------------------------------------------------------
def test_the_approval_chain_from_request_to_paid(crm):
    ann, mia, eve = crm.people["ann"], crm.people["mia"], crm.people["eve"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 2, "discount_pct": 30}], payment_terms_days=90)
    submitted = ann.post(f"/orders/{order['id']}/submit").json
    assert submitted["status"] == "pending_approval"
    approval = _pending(ann, order["id"])
    assert [(s["level"], s["approver_id"], s["status"]) for s in approval["steps"]] == [
        ("manager", "mia", "pending"), ("executive", None, "waiting")]
    assert {r["rule"] for r in approval["reasons"]} == {"discount-over-10", "discount-over-25", "terms-over-60"}
    # The queue: mia's has it, eve's not yet, ann (a rep) approves nothing.
    assert [a["id"] for a in mia.get("/approvals", query_string={"status": "pending"}).json["items"]] == [approval["id"]]
    assert eve.get("/approvals", query_string={"status": "pending"}).json["items"] == []
    assert _decide(ann, approval["id"], "approve").status_code == 403
    assert _decide(eve, approval["id"], "reject").status_code == 422  # a rejection says why
    assert _decide(mia, approval["id"], "approve", "fine by me").json["current_approver_id"] is None
    assert [a["id"] for a in eve.get("/approvals", query_string={"status": "pending"}).json["items"]] == [approval["id"]]
    rejected = _decide(eve, approval["id"], "reject", "30% is too much for a repeat customer").json
    assert rejected["status"] == "rejected"
    back = ann.get(f"/orders/{order['id']}").json
    assert back["status"] == "draft" and back["rejection_reason"] == "30% is too much for a repeat customer"
    # Fixed and resubmitted: a new request, both approve, the order is confirmed.
    assert _patch(ann, order, lines=[{"sku": "LATHE-5X", "qty": 2, "discount_pct": 28}]).status_code == 200
    assert ann.post(f"/orders/{order['id']}/submit").json["status"] == "pending_approval"
    second = _pending(ann, order["id"])
    assert second["id"] != approval["id"]
    assert _decide(mia, second["id"], "approve").status_code == 200
    assert _decide(eve, second["id"], "approve", "ok").json["status"] == "approved"
    confirmed = ann.get(f"/orders/{order['id']}").json
    assert confirmed["status"] == "confirmed" and confirmed["total"] == "1440.00"
    # Decisions are final.
    assert _decide(eve, second["id"], "reject", "changed my mind").status_code == 409
    # Paid in two instalments, against a plan.
    plan = [{"due_on": "2026-12-15", "amount": "720.00"}, {"due_on": "2027-01-15", "amount": "720.00"}]
    assert ann.put(f"/orders/{order['id']}/payment-plan", json={"instalments": plan[:1]}).status_code == 422
    assert ann.put(f"/orders/{order['id']}/payment-plan", json={"instalments": plan}).status_code == 200
    assert ann.post(f"/orders/{order['id']}/fulfill").json["status"] == "fulfilled"
    today = utcnow().date().isoformat()
    first = ann.post(f"/orders/{order['id']}/pay", json={"amount": "720.00", "paid_on": today},
                     headers={"Idempotency-Key": "pay-1"})
    assert first.status_code == 200 and first.json["collected"] == "720.00" and first.json["status"] == "fulfilled"
    replay = ann.post(f"/orders/{order['id']}/pay", json={"amount": "720.00", "paid_on": today},
                      headers={"Idempotency-Key": "pay-1"})
    assert replay.json["collected"] == "720.00"  # applied once
    assert [i["paid"] for i in first.json["payment_plan"]] == ["720.00", "0.00"]
    too_much = ann.post(f"/orders/{order['id']}/pay", json={"amount": "720.01", "paid_on": today})
    assert too_much.status_code == 422
    paid = ann.post(f"/orders/{order['id']}/pay", json={"amount": "720.00", "paid_on": today}).json
    assert paid["status"] == "paid" and paid["outstanding"] == "0.00"
    assert len(ann.get(f"/orders/{order['id']}/payments").json["items"]) == 2
    actions = [h["action"] for h in ann.get(f"/orders/{order['id']}/history").json["items"]]
    assert actions.count("approval_approved") == 3 and actions.count("approval_rejected") == 1
    assert actions[-1] == "paid"
    rejection = next(h for h in ann.get(f"/orders/{order['id']}/history").json["items"]
                     if h["action"] == "approval_rejected")
    assert rejection["actor"] == "eve" and rejection["detail"]["comment"] == "30% is too much for a repeat customer"
    for kind in ("approval.requested", "approval.decided", "order.submitted", "order.payment_recorded", "order.paid"):
        assert _events(kind) and all(problems(ORDERS.topic, e) is None for e in _events(kind)), kind
    requested = _events("approval.requested")[0]["data"]["approval"]
    assert requested["current_approver_id"] == "mia" and requested["order_number"] == order["number"]


def _approved(crm, order):
    ann, mia = crm.people["ann"], crm.people["mia"]
    ann.post(f"/orders/{order['id']}/submit")
    approval = _pending(ann, order["id"])
    assert _decide(mia, approval["id"], "approve").json["status"] == "approved"
    return approval


def test_changing_terms_under_approval_supersedes_the_request(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    first = _pending(ann, order["id"])
    changed = _patch(ann, order, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 20}]).json
    assert changed["status"] == "pending_approval"
    assert _decide(mia, first["id"], "approve").status_code == 409  # superseded: nothing to approve
    assert ann.get(f"/approvals/{first['id']}").json["status"] == "superseded"
    assert _pending(ann, order["id"])["id"] != first["id"]


@pytest.mark.parametrize("change", [
    {"lines": [{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15, "unit_price": "500.00"}]},
    {"lines": [{"sku": "LATHE-5X", "qty": 1, "discount_pct": 40}]},
    {"lines": [{"sku": "LATHE-5X", "qty": 50, "discount_pct": 15}]},
    {"payment_terms_days": 120},
    {"delivery_date": (dt.date.today() + dt.timedelta(days=1)).isoformat()},
])
def test_changing_an_approved_order_reopens_approval(crm, change):
    ann = crm.people["ann"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    _approved(crm, order)
    assert ann.get(f"/orders/{order['id']}").json["status"] == "confirmed"
    after = _patch(ann, order, **change).json
    assert after["status"] == "pending_approval", after
    assert _pending(ann, order["id"])["status"] == "pending"


def test_a_lower_unit_price_is_a_discount_to_the_rules(crm):
    ann = crm.people["ann"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "unit_price": "600.00"}])  # 40% below list
    assert ann.post(f"/orders/{order['id']}/submit").json["status"] == "pending_approval"
    reasons = {r["rule"]: r["value"] for r in _pending(ann, order["id"])["reasons"]}
    assert reasons == {"discount-over-10": "40.00", "discount-over-25": "40.00"}


def test_nobody_approves_their_own_order(crm):
    mia, pat = crm.people["mia"], crm.people["pat"]
    order = _order(mia, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    mia.post(f"/orders/{order['id']}/submit")
    approval = _pending(mia, order["id"])
    # Mia manages the order's team, so her manager's manager decides instead; she cannot.
    assert [(s["level"], s["approver_id"]) for s in approval["steps"]] == [("parent_manager", "pat")]
    assert _decide(mia, approval["id"], "approve").status_code == 403
    assert mia.get("/approvals", query_string={"status": "pending"}).json["items"] == []
    assert _decide(pat, approval["id"], "approve").json["status"] == "approved"


def test_a_duplicate_of_an_approved_order_needs_its_own_approval(crm):
    ann = crm.people["ann"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    _approved(crm, order)
    copy = ann.post(f"/orders/{order['id']}/duplicate")
    assert copy.status_code == 201 and copy.json["status"] == "draft" and copy.json["duplicated_from"] == order["id"]
    assert copy.json["number"] != order["number"]
    assert ann.post(f"/orders/{copy.json['id']}/submit").json["status"] == "pending_approval"


def test_an_approval_waiting_too_long_goes_up_a_level(crm):
    ann, root = crm.people["ann"], crm.people["root"]
    current = root.get("/approval-policies")
    policy = {k: current.json[k] for k in ("rules", "limits")}
    assert root.put("/approval-policies", json={**policy, "escalate_after_hours": 2}).status_code == 428
    r = root.put("/approval-policies", json={**policy, "escalate_after_hours": 2},
                 headers={"If-Match": current.headers["ETag"]})
    assert r.status_code == 200 and r.json["escalate_after_hours"] == 2 and r.json["version"] == 2
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        count, oldest = approvals.waiting(uow, utcnow() + dt.timedelta(hours=3))  # what the metrics say
        assert count == 1 and 3 * 3600 - 60 < oldest < 3 * 3600 + 60
        assert approvals.escalate_due(uow, ctx.settings) == 0  # not yet due
        assert approvals.escalate_due(uow, ctx.settings, utcnow() + dt.timedelta(hours=3)) == 1
        uow.commit()
    approval = _pending(ann, order["id"])
    assert [(s["level"], s["approver_id"], s["status"]) for s in approval["steps"]] == [
        ("manager", "mia", "escalated"), ("parent_manager", "pat", "pending")]
    assert _decide(crm.people["mia"], approval["id"], "approve").status_code == 403
    [escalated] = _events("approval.escalated")
    assert problems(ORDERS.topic, escalated) is None
    assert escalated["data"]["escalated_from"] == "mia" and escalated["data"]["approval"]["current_approver_id"] == "pat"


def test_the_policy_document_is_validated(crm):
    root = crm.people["root"]
    etag = root.get("/approval-policies").headers["ETag"]
    for bad in ({"rules": [{"key": "x", "metric": "mood", "op": "above", "threshold": "1", "chain": ["manager"]}]},
                {"rules": [{"key": "x", "metric": "total", "op": "above", "threshold": "1", "chain": ["ceo"]}]},
                {"rules": [{"key": "x", "metric": "total", "op": "above", "threshold": "1e9", "chain": ["manager"]}]},
                {"rules": [], "escalate_after_hours": -1}):
        assert root.put("/approval-policies", json=bad, headers={"If-Match": etag}).status_code == 422, bad
    dup = {"key": "x", "metric": "total", "op": "above", "threshold": "1", "chain": ["manager"]}
    assert root.put("/approval-policies", json={"rules": [dup, dup]}, headers={"If-Match": etag}).status_code == 422
    assert crm.people["mia"].put("/approval-policies", json={"rules": []}, headers={"If-Match": etag}).status_code == 403


def test_a_manager_limit_sends_larger_orders_up(crm):
    ann, root = crm.people["ann"], crm.people["root"]
    current = root.get("/approval-policies")
    rules = [{"key": "total-over-1000", "metric": "total", "op": "above", "threshold": "1000", "chain": ["manager"]}]
    root.put("/approval-policies", json={"rules": rules, "limits": {"manager": {"total": "5000"}}},
             headers={"If-Match": current.headers["ETag"]})
    small, large = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 2}]), _order(ann, lines=[{"sku": "LATHE-5X", "qty": 9}])
    for order in (small, large):
        ann.post(f"/orders/{order['id']}/submit")
    assert [s["approver_id"] for s in _pending(ann, small["id"])["steps"]] == ["mia"]
    assert [s["approver_id"] for s in _pending(ann, large["id"])["steps"]] == ["mia", "pat"]


# ---- visibility -----------------------------------------------------------------------------------------
def test_another_team_sees_nothing_of_an_order(crm):
    ann, bob, wes, mia = crm.people["ann"], crm.people["bob"], crm.people["wes"], crm.people["mia"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    approval = _pending(ann, order["id"])
    ann.post(f"/orders/{order['id']}/pay", json={"amount": "1.00", "paid_on": "2026-11-30"})
    for stranger in (bob, wes):
        for path in (f"/orders/{order['id']}", f"/orders/{order['id']}/payments", f"/orders/{order['id']}/history",
                     f"/approvals/{approval['id']}"):
            assert stranger.get(path).status_code == 404, path
        assert stranger.get("/orders").json["items"] == []
        assert stranger.get("/orders", query_string={"account_id": ACCOUNT}).json["items"] == []
        assert stranger.get("/approvals").json["items"] == []
        assert stranger.get("/approvals", query_string={"status": "pending"}).json["items"] == []
    assert _decide(wes, approval["id"], "approve").status_code == 404  # a manager, not of this order
    assert _decide(bob, approval["id"], "approve").status_code == 403  # reps decide nothing
    for stranger in (bob, wes):
        assert stranger.post(f"/orders/{order['id']}/cancel", json={}).status_code == 404
        assert stranger.post(f"/orders/{order['id']}/duplicate").status_code == 404
        assert stranger.patch(f"/orders/{order['id']}", json={"notes": "x"}, headers={"If-Match": '"v1"'}).status_code == 404
    assert [o["id"] for o in mia.get("/orders").json["items"]] == [order["id"]]
    kim = crm.people["kim"]
    assert kim.get("/orders").status_code == 403 and kim.get(f"/orders/{order['id']}").status_code == 403


def test_service_staff_read_the_orders_of_their_accounts_and_change_nothing(crm):
    ann, sam = crm.people["ann"], crm.people["sam"]
    mine, other = _order(ann), _order(crm.people["bob"], account=OTHER_ACCOUNT)
    seen = sam.get(f"/orders/{mine['id']}")
    assert seen.status_code == 200 and "gross_margin" not in seen.json
    assert sam.get(f"/orders/{other['id']}").status_code == 404
    assert [o["id"] for o in sam.get("/orders").json["items"]] == [mine["id"]]
    assert sam.post(f"/orders/{mine['id']}/submit").status_code == 403
    assert sam.post("/orders", json={"account_id": ACCOUNT}).status_code == 403


def test_a_margin_rule_shows_no_margin_to_the_rep(crm):
    ann, mia, root = crm.people["ann"], crm.people["mia"], crm.people["root"]
    current = root.get("/approval-policies")
    rules = [{"key": "margin-under-45", "metric": "gross_margin_pct", "op": "below", "threshold": "45",
              "chain": ["manager"]}]
    root.put("/approval-policies", json={"rules": rules}, headers={"If-Match": current.headers["ETag"]})
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1}])  # 40% margin
    ann.post(f"/orders/{order['id']}/submit")
    [reason] = _pending(ann, order["id"])["reasons"]
    assert reason["rule"] == "margin-under-45" and "value" not in reason and "threshold" not in reason
    [seen] = _pending(mia, order["id"])["reasons"]
    assert seen["value"] == "40.0" and seen["threshold"] == "45"


# ---- quota: types, house accounts, products ------------------------------------------------------------
def test_why_an_order_counts_toward_quota(crm):
    ann, root = crm.people["ann"], crm.people["root"]
    sample = _order(ann, type="sample")
    assert sample["counts_toward_quota"] is False and "sample" in sample["quota_reason"]
    types = root.get("/order-types").json["types"]
    assert [t["key"] for t in types] == ["standard", "special", "sample", "repeat", "new_customer"]
    types[2]["counts_toward_quota"] = True
    assert root.put("/order-types", json={"types": types}).status_code == 200
    assert ann.get(f"/orders/{sample['id']}").json["counts_toward_quota"] is True  # a draft follows
    assert root.put("/order-types", json={"types": types[1:]}).status_code == 422  # standard stays
    assert root.put("/order-types", json={"types": [t for t in types if t["key"] != "sample"]}).status_code == 409
    assert crm.people["mia"].put("/order-types", json={"types": types}).status_code == 403
    # A house account: nothing on it counts.
    assert root.put(f"/house-accounts/{ACCOUNT}", json={"house_account": True}).status_code == 200
    house = _order(ann)
    assert house["counts_toward_quota"] is False and house["quota_reason"].startswith("a house account")
    assert [a["id"] for a in crm.people["mia"].get("/house-accounts").json["items"]] == [ACCOUNT]
    root.put(f"/house-accounts/{ACCOUNT}", json={"house_account": False})
    # A product excluded from quota: its lines do not count, the rest does.
    spindle = root.get("/products", query_string={"q": "SPINDLE"}).json["items"][0]
    root.patch(f"/products/{spindle['id']}", json={"excluded_from_quota": True},
               headers={"If-Match": f'"v{spindle["version"]}"'})
    mixed = _order(ann)
    assert mixed["counts_toward_quota"] is True and mixed["counted_total"] == "2000.00"
    assert "SPINDLE-1" in mixed["quota_reason"]


# ---- won deals ---------------------------------------------------------------------------------------------
def _won(opportunity_id: str, products: list[dict], **changes) -> dict:
    return new_event("opportunity.won", opportunity_id, {"opportunity": {
        "id": opportunity_id, "account_id": ACCOUNT, "name": "Lathes", "owner_id": "ann", "team_id": "east",
        "currency": "CNY", "products": products, "status": "won", **changes}}, source="opportunities", actor="ann")


def _deliver_won(envelope: dict) -> None:
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(won.handlers(ctx.settings), uow, envelope)
        uow.commit()


def test_a_won_deal_becomes_one_draft_order(crm):
    ann = crm.people["ann"]
    deal = str(uuid.uuid4())
    envelope = _won(deal, [{"sku": "LATHE-5X", "qty": 2, "unit_price": "900.00"}])
    for _ in range(3):
        _deliver_won(envelope)
    _deliver_won(_won(deal, [{"sku": "SPINDLE-1", "qty": 1, "unit_price": "200.00"}]))  # another event, same deal
    [order] = ann.get("/orders", query_string={"opportunity_id": deal}).json["items"]
    assert order["status"] == "draft" and order["owner_id"] == "ann" and order["total"] == "1800.00"
    assert order["lines"][0]["unit_price"] == "900.00" and order["account_id"] == ACCOUNT
    assert order["delivery_date"] is None  # the rep sets it before submitting
    assert _patch(ann, order, delivery_date=IN_A_MONTH).status_code == 200
    assert ann.post(f"/orders/{order['id']}/submit").json["status"] == "confirmed"  # 10% exactly: within policy
    for products, broken, reason in (
            ([{"sku": "NOPE", "qty": 1, "unit_price": "1.00"}], {}, "no product with SKU"),
            ([{"sku": "LATHE-5X", "qty": -1, "unit_price": "1.00"}], {}, "invalid"),
            ([], {"account_id": "nope"}, "invalid opportunity.won")):
        with pytest.raises(Reject, match=reason):
            _deliver_won(_won(str(uuid.uuid4()), products, **broken))


# ---- handover ---------------------------------------------------------------------------------------------
def test_a_handover_moves_open_orders_and_waiting_approvals_and_keeps_credit(crm):
    ann, mia = crm.people["ann"], crm.people["mia"]
    crm.as_("amy", "rep", teams=["east"])
    crm.as_("max", "manager", teams=["east"])
    confirmed = _order(ann)
    ann.post(f"/orders/{confirmed['id']}/submit")
    waiting = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{waiting['id']}/submit")
    ctx = bootstrap.context()
    for leaver, heir, hid in (("ann", "amy", "h1"), ("mia", "max", "h2")):
        with ctx.db.uow() as uow:
            deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", leaver, {
                "handover_id": hid, "from_user_id": leaver, "to_user_id": heir}, source="gateway"))
            uow.commit()
    done = {e["subject"]: e["data"] for e in _events("handover.completed")}
    assert done["h1"]["orders"] == 2 and done["h2"]["approvals"] == 1
    moved = mia.get(f"/orders/{confirmed['id']}").json
    assert moved["owner_id"] == "amy" and moved["credited_to"] == "ann"
    approval = _pending(mia, waiting["id"])
    assert approval["current_approver_id"] == "max" and approval["steps"][0]["escalated_from"] == "mia"


# ---- what the attack review found ---------------------------------------------------------------------
def test_a_payment_plan_cannot_stretch_the_approved_terms(crm):
    ann = crm.people["ann"]
    order = _order(ann)
    assert ann.post(f"/orders/{order['id']}/submit").json["status"] == "confirmed"  # net 30, no approval
    late = (dt.date.today() + dt.timedelta(days=700)).isoformat()
    r = ann.put(f"/orders/{order['id']}/payment-plan", json={"instalments": [
        {"due_on": IN_A_MONTH, "amount": "1000.00"}, {"due_on": late, "amount": "2000.00"}]})
    assert r.status_code == 422 and "longer terms need approval" in json.dumps(r.json["errors"])
    fine = (dt.date.today() + dt.timedelta(days=60)).isoformat()  # delivery in 30 days, then 30 days' terms
    assert ann.put(f"/orders/{order['id']}/payment-plan", json={"instalments": [
        {"due_on": IN_A_MONTH, "amount": "1000.00"}, {"due_on": fine, "amount": "2000.00"}]}).status_code == 200


def test_a_cost_beyond_what_an_order_holds_is_422_not_500(crm):
    ann, root = crm.people["ann"], crm.people["root"]
    assert root.post("/products", json={"sku": "BIG", "name": "Big", "list_price": "8000.00",
                                        "unit_cost": "5000.00"}).status_code == 201
    r = ann.post("/orders", json={"account_id": ACCOUNT, "lines": [
        {"sku": "BIG", "qty": 1_000_000, "discount_pct": 100}] * 200})
    assert r.status_code == 422 and r.json["errors"] == {"lines": ["too large"]}, r.json


def test_house_accounts_are_listed_only_to_those_who_see_them(crm):
    root = crm.people["root"]
    root.put(f"/house-accounts/{ACCOUNT}", json={"house_account": True})
    assert crm.people["wes"].get("/house-accounts").json["items"] == []
    assert [a["id"] for a in crm.people["mia"].get("/house-accounts").json["items"]] == [ACCOUNT]
    assert [a["id"] for a in crm.people["eve"].get("/house-accounts").json["items"]] == [ACCOUNT]


def _handover(leaver: str, heir: str, handover_id: str) -> None:
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", leaver, {
            "handover_id": handover_id, "from_user_id": leaver, "to_user_id": heir}, source="gateway"))
        uow.commit()


def test_a_heir_who_is_the_approver_of_an_inherited_order_passes_the_decision_up(crm):
    ann, mia, pat = crm.people["ann"], crm.people["mia"], crm.people["pat"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    _handover("ann", "mia", "h-ann-mia")
    assert mia.get(f"/orders/{order['id']}").json["owner_id"] == "mia"
    approval = _pending(pat, order["id"])
    assert approval["current_approver_id"] == "pat" and approval["current_level"] == "parent_manager"
    assert [a["id"] for a in pat.get("/approvals", query_string={"status": "pending"}).json["items"]] == [approval["id"]]
    assert _decide(pat, approval["id"], "approve").json["status"] == "approved"


def test_a_managers_decisions_are_not_handed_to_a_rep(crm):
    ann, pat = crm.people["ann"], crm.people["pat"]
    amy = crm.as_("amy", "rep", teams=["east"])
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    _handover("mia", "amy", "h-mia-amy")
    assert amy.get("/approvals").json["items"] == [] and amy.get("/approvals", query_string={
        "status": "pending"}).json["items"] == []
    assert _pending(pat, order["id"])["current_approver_id"] == "pat"


def test_a_manager_who_no_longer_manages_the_team_decides_nothing(crm):
    ann = crm.people["ann"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    approval = _pending(ann, order["id"])
    crm.directory.put_team("east", "max", parent="sales")  # mia manages no team now; her new token says so
    former = crm.as_("mia", "manager", teams=["east"], manages=[], register=False)
    assert former.get("/order-types").status_code == 200  # a valid token of hers
    assert _decide(former, approval["id"], "approve").status_code == 403
    assert crm.people["eve"].get(f"/approvals/{approval['id']}").json["status"] == "pending"


def test_a_manager_submitting_a_team_order_is_not_its_approver(crm):
    ann, mia, pat = crm.people["ann"], crm.people["mia"], crm.people["pat"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    assert mia.post(f"/orders/{order['id']}/submit").json["status"] == "pending_approval"
    approval = _pending(pat, order["id"])
    assert [s["approver_id"] for s in approval["steps"]] == ["pat"]
    assert _decide(pat, approval["id"], "approve").json["status"] == "approved"


def test_the_same_lines_again_keep_the_plan_and_the_prices_as_sold(crm):
    ann, root, mia = crm.people["ann"], crm.people["root"], crm.people["mia"]
    order = _order(ann)
    ann.post(f"/orders/{order['id']}/submit")
    plan = [{"due_on": IN_A_MONTH, "amount": "3000.00"}]
    assert ann.put(f"/orders/{order['id']}/payment-plan", json={"instalments": plan}).status_code == 200
    lathe = root.get("/products", query_string={"q": "LATHE"}).json["items"][0]
    root.patch(f"/products/{lathe['id']}", json={"unit_cost": "900.00"}, headers={"If-Match": f'"v{lathe["version"]}"'})
    same = _patch(ann, order, lines=[{"sku": "LATHE-5X", "qty": 2}, {"sku": "SPINDLE-1", "qty": 5}], currency="CNY")
    assert same.status_code == 200 and same.json["status"] == "confirmed"
    assert [i["amount"] for i in same.json["payment_plan"]] == ["3000.00"]
    assert mia.get(f"/orders/{order['id']}").json["lines"][0]["unit_cost"] == "600.00"  # as sold


def test_order_numbers_do_not_count_other_teams_orders(crm):
    numbers = [_order(crm.people["ann"])["number"] for _ in range(6)]
    codes = [int(n.rsplit("-", 1)[1]) for n in numbers]
    assert len(set(codes)) == 6
    assert [b - a for a, b in itertools.pairwise(codes)] != [1] * 5  # not a visible sequence


def test_an_order_under_approval_keeps_a_line(crm):
    ann = crm.people["ann"]
    order = _order(ann, lines=[{"sku": "LATHE-5X", "qty": 1, "discount_pct": 15}])
    ann.post(f"/orders/{order['id']}/submit")
    assert _patch(ann, order, lines=[]).status_code == 409
    assert ann.get(f"/orders/{order['id']}").json["status"] == "pending_approval"


def test_a_deal_won_by_someone_who_has_left_is_their_successors_order(crm):
    crm.as_("amy", "rep", teams=["east"])
    _handover("ann", "amy", "h-ann-amy")
    crm.directory.put_user("ann", "rep", "east", active=False)
    deal = str(uuid.uuid4())
    _deliver_won(_won(deal, [{"sku": "LATHE-5X", "qty": 1, "unit_price": "1000.00"}]))
    [order] = crm.people["eve"].get("/orders", query_string={"opportunity_id": deal}).json["items"]
    assert order["owner_id"] == "amy" and order["team_id"] == "east"
