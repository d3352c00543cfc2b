"""The orders service with every process real, through the edge (issue 15): a lead converted, the
deal won, the draft order appearing from opportunity.won, an approval chain that is rejected, fixed
and approved, fulfilment, two instalments paid, and the account's tier recomputed from the order;
replays of opportunity.won, the DLQ, and what another team's rep can observe.

The story runs on PostgreSQL here and on SQLite in test_concurrency_sqlite.py (`make run`'s store),
each on its module's stack."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from crmkit.events import new_event
from tests.e2e.helpers import produce
from tests.e2e.performance_story import month_story
from tests.infra import read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
CLOSE = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def orders_know_everyone(crm) -> None:
    """Until the orders service's directory replica (crm.directory.v1, asynchronous) knows the org:
    before that, it rightly answers 401 to a token naming a user it has not heard of."""
    for name in ("admin", "ann", "mgr-east", "exec", "bo", "mkt"):
        wait_for(lambda name=name: crm.as_(name).get(crm.api("/order-types")).status_code != 401, timeout=60,
                 what=f"{name} known to the orders service")


@pytest.fixture(scope="module", autouse=True)
def _replicated(crm):
    orders_know_everyone(crm)


def _product(crm, price: str = "100000.00", cost: str = "60000.00") -> dict:
    r = crm.as_("admin").post(crm.api("/products"), json={
        "sku": f"LX-{_uid()}", "name": "Lathe", "category": "machines", "list_price": price, "unit_cost": cost})
    assert r.status_code == 201, r.text
    return r.json()


def _patch(session, crm, path: str, body: dict):
    current = session.get(crm.api(path))
    assert current.status_code == 200, current.text
    return session.patch(crm.api(path), json=body, headers={"If-Match": current.headers["ETag"]})


def _pending(session, crm, order_id: str) -> dict:
    [approval] = session.get(crm.api("/approvals"), params={"order_id": order_id, "status": "pending"}).json()["items"]
    return approval


def _decide(session, crm, approval_id: str, decision: str, comment: str | None = None):
    return session.post(crm.api(f"/approvals/{approval_id}/decision"), json={"decision": decision, "comment": comment})


def order_story(crm) -> None:
    """Lead → won deal → draft order → approval rejected, fixed, approved → fulfilled → paid in two
    instalments → the account's tier. Shared by the PostgreSQL and SQLite stacks."""
    orders_know_everyone(crm)
    ann, mgr, exec_ = crm.as_("ann"), crm.as_("mgr-east"), crm.as_("exec")
    product = _product(crm)
    lead = ann.post(crm.api("/leads"), json={"company": f"Ordering Co {_uid()}", "contact_name": "Zhao Min",
                                             "email": f"zhao.{_uid()}@example.com", "region": "华东"}).json()
    ids = ann.post(crm.api(f"/leads/{lead['id']}/convert"), json={
        "opportunity_name": "Two lathes", "amount": "200000.00", "expected_close_date": CLOSE}).json()
    wait_for(lambda: ann.get(crm.api(f"/opportunities/{ids['opportunity_id']}")).status_code == 200, timeout=30,
             what="the converted opportunity")
    opp_path = f"/opportunities/{ids['opportunity_id']}"
    r = _patch(ann, crm, opp_path, {"products": [{"sku": product["sku"], "qty": 2, "unit_price": "100000.00"}]})
    assert r.status_code == 200, r.text
    assert ann.post(crm.api(f"{opp_path}/win"), json={}).status_code == 200

    def draft():
        items = ann.get(crm.api("/orders"), params={"opportunity_id": ids["opportunity_id"]}).json()["items"]
        return items[0] if items else None
    order = wait_for(draft, timeout=30, what="the draft order of the won deal")
    assert order["status"] == "draft" and order["account_id"] == ids["account_id"] and order["total"] == "200000.00"
    assert order["owner_id"] == crm.users["ann"]["id"] and "gross_margin" not in order
    path = f"/orders/{order['id']}"
    # Edited, submitted with a 30% discount and 90-day terms: manager, then an executive.
    r = _patch(ann, crm, path, {"lines": [{"sku": product["sku"], "qty": 2, "discount_pct": "30"}],
                                "payment_terms_days": 90, "delivery_date": CLOSE})
    assert r.status_code == 200 and r.json()["total"] == "140000.00", r.text
    assert ann.post(crm.api(f"{path}/submit")).json()["status"] == "pending_approval"
    approval = _pending(ann, crm, order["id"])
    assert [(s["level"], s["approver_id"]) for s in approval["steps"]] == [
        ("manager", crm.users["mgr-east"]["id"]), ("executive", None)]
    assert approval["id"] in [a["id"] for a in mgr.get(crm.api("/approvals"), params={"status": "pending"}).json()["items"]]
    assert _decide(mgr, crm, approval["id"], "approve", "ok for me").status_code == 200
    assert _decide(exec_, crm, approval["id"], "reject", "too generous").json()["status"] == "rejected"
    back = ann.get(crm.api(path)).json()
    assert back["status"] == "draft" and back["rejection_reason"] == "too generous"
    # Fixed, resubmitted, approved by both: confirmed.
    assert _patch(ann, crm, path, {"lines": [{"sku": product["sku"], "qty": 2, "discount_pct": "26"}]}).status_code == 200
    assert ann.post(crm.api(f"{path}/submit")).json()["status"] == "pending_approval"
    again = _pending(ann, crm, order["id"])
    assert _decide(mgr, crm, again["id"], "approve").status_code == 200
    assert _decide(exec_, crm, again["id"], "approve", "fine").json()["status"] == "approved"
    confirmed = ann.get(crm.api(path)).json()
    assert confirmed["status"] == "confirmed" and confirmed["total"] == "148000.00"
    # Fulfilled and paid in two instalments, against a plan.
    today = dt.date.today()
    plan = [{"due_on": today.isoformat(), "amount": "74000.00"},
            {"due_on": (today + dt.timedelta(days=30)).isoformat(), "amount": "74000.00"}]
    assert ann.put(crm.api(f"{path}/payment-plan"), json={"instalments": plan}).status_code == 200
    assert ann.post(crm.api(f"{path}/fulfill")).json()["status"] == "fulfilled"
    first = ann.post(crm.api(f"{path}/pay"), json={"amount": "74000.00", "paid_on": today.isoformat()},
                     headers={"Idempotency-Key": f"pay-{order['id']}-1"})
    assert first.status_code == 200 and first.json()["outstanding"] == "74000.00", first.text
    paid = ann.post(crm.api(f"{path}/pay"), json={"amount": "74000.00", "paid_on": today.isoformat()}).json()
    assert paid["status"] == "paid" and [i["outstanding"] for i in paid["payment_plan"]] == ["0.00", "0.00"]
    history = [h["action"] for h in ann.get(crm.api(f"{path}/history")).json()["items"]]
    assert history.count("approval_approved") == 3 and "approval_rejected" in history and history[-1] == "paid"
    # The opportunities service's tiering reads order.confirmed / order.paid: the account is ranked.
    wait_for(lambda: exec_.get(crm.api(f"/accounts/{ids['account_id']}")).json()["tier"] != "unranked", timeout=60,
             what="the account's tier recomputed from its order")
    # The customer view shows the order, and nothing is degraded but what is not deployed.
    view = ann.get(crm.api(f"/customers/{ids['account_id']}")).json()
    assert [o["id"] for o in view["orders"]] == [order["id"]] and "orders" not in view["degraded"]
    # Another team's rep sees none of it.
    bo = crm.as_("bo")
    for p in (path, f"{path}/payments", f"{path}/history", f"/approvals/{again['id']}"):
        assert bo.get(crm.api(p)).status_code == 404, p
    assert order["id"] not in [o["id"] for o in bo.get(crm.api("/orders")).json()["items"]]


def test_a_won_deal_goes_through_approval_to_paid(crm):
    order_story(crm)


def test_won_delivered_three_times_is_one_order_and_a_broken_one_is_dead_lettered(crm):
    ann = crm.as_("ann")
    product = _product(crm)
    account = ann.post(crm.api("/accounts"), json={"name": f"Replayed {_uid()}"}).json()
    deal = str(uuid.uuid4())
    opportunity = {"id": deal, "account_id": account["id"], "owner_id": crm.users["ann"]["id"],
                   "team_id": crm.teams["east"]["id"], "currency": "CNY", "status": "won",
                   "products": [{"sku": product["sku"], "qty": 1, "unit_price": "90000.00"}]}
    won = new_event("opportunity.won", deal, {"opportunity": opportunity}, source="opportunities")
    broken = new_event("opportunity.won", str(uuid.uuid4()), {"opportunity": {
        **opportunity, "id": str(uuid.uuid4()), "products": [{"sku": "NO-SUCH-SKU", "qty": 1, "unit_price": "1.00"}]}},
        source="opportunities")
    topic = f"{crm.topic_prefix}crm.opportunities.v1"
    produce(crm.env["KAFKA_BOOTSTRAP_SERVERS"], topic, [won, won, {**won, "id": str(uuid.uuid4())}, broken])

    def dead_lettered():
        return [m for m in read_topic(crm.env["KAFKA_BOOTSTRAP_SERVERS"], f"{topic}.dlq", timeout_ms=500)
                if broken["id"].encode() in m.value]
    wait_for(dead_lettered, timeout=60, what="the unplaceable deal in the DLQ")
    assert b"no product with SKU NO-SUCH-SKU" in dict(dead_lettered()[0].headers)["error"]
    wait_for(lambda: crm.sql("orders", "select count(*) from processed_events where event_id = %s", won["id"])[0][0],
             what="the won event consumed")
    orders = ann.get(crm.api("/orders"), params={"opportunity_id": deal}).json()["items"]
    assert len(orders) == 1 and orders[0]["total"] == "90000.00"
    assert crm.sql("orders", "select count(*) from orders where opportunity_id = %s", deal) == [(1,)]


def test_bypasses_through_the_edge_are_refused(crm):
    ann, mgr = crm.as_("ann"), crm.as_("mgr-east")
    product = _product(crm, price="1000.00", cost="500.00")
    account = ann.post(crm.api("/accounts"), json={"name": f"Bypass {_uid()}"}).json()
    wait_for(lambda: crm.sql("orders", "select count(*) from accounts where id = %s", account["id"])[0][0],
             what="the account replicated to orders")
    order = ann.post(crm.api("/orders"), json={"account_id": account["id"], "delivery_date": CLOSE, "lines": [
        {"sku": product["sku"], "qty": 1, "discount_pct": 15}]}).json()
    path = f"/orders/{order['id']}"
    assert ann.post(crm.api(f"{path}/submit")).json()["status"] == "pending_approval"
    approval = _pending(ann, crm, order["id"])
    assert _decide(ann, crm, approval["id"], "approve").status_code == 403  # a rep approves nothing
    assert _decide(mgr, crm, approval["id"], "approve").status_code == 200
    # An approved order whose price is cut goes back for approval; a duplicate needs its own.
    cut = _patch(ann, crm, path, {"lines": [{"sku": product["sku"], "qty": 1, "unit_price": "700.00"}]})
    assert cut.json()["status"] == "pending_approval"
    reopened = _pending(ann, crm, order["id"])
    assert reopened["id"] != approval["id"]
    assert _decide(mgr, crm, approval["id"], "approve").status_code == 409  # decided: final
    copy = ann.post(crm.api(f"{path}/duplicate")).json()
    assert ann.post(crm.api(f"/orders/{copy['id']}/submit")).json()["status"] == "pending_approval"
    # A manager's own order is decided above them.
    own = mgr.post(crm.api("/orders"), json={"account_id": account["id"], "delivery_date": CLOSE, "lines": [
        {"sku": product["sku"], "qty": 1, "discount_pct": 15}]})
    assert own.status_code == 201, own.text
    mgr.post(crm.api(f"/orders/{own.json()['id']}/submit"))
    mine = _pending(mgr, crm, own.json()["id"])
    assert _decide(mgr, crm, mine["id"], "approve").status_code == 403
    # Bad input is a 4xx problem, never a 500.
    for bad in ({"account_id": account["id"], "lines": [{"sku": product["sku"], "qty": -1}]},
                {"account_id": account["id"], "lines": [{"sku": product["sku"], "qty": 1, "discount_pct": 101}]},
                {"account_id": account["id"], "lines": [{"sku": "NOPE", "qty": 1}]},
                {"account_id": account["id"], "lines": [{"sku": product["sku"], "qty": 999999,
                                                         "unit_price": "999999999999.00"}]}):
        r = ann.post(crm.api("/orders"), json=bad)
        assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json", r.text
    assert crm.as_("mkt").get(crm.api("/orders")).status_code == 403


def test_a_month_of_targets_alerts_and_commission(crm):
    """Issue 16's month with a clock the test controls (tests/e2e/performance_story.py)."""
    month_story(crm)
