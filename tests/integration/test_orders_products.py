"""The orders service's product catalogue (issue 15, first step), in-process on SQLite and PostgreSQL:
admins write it, everyone who sells reads it, unit cost and margin only for those who may see them,
and every change is an event of its own schema in the outbox."""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from crmkit.events import new_event
from services.orders import bootstrap, handover
from services.orders.db import Base
from services.orders.events import ORDERS
from tests.integration.service_client import assert_migrations_match, deliver, service_client
from tests.support.event_catalogs import problems


@pytest.fixture
def orders(database_url, topic_prefix, monkeypatch):
    with service_client(bootstrap, "orders", database_url, topic_prefix, monkeypatch) as client:
        yield client


def _events(kind: str) -> list[dict]:
    outbox = bootstrap.KIT_TABLES["outbox"]
    with bootstrap.context().db.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.payload).where(outbox.c.event_type == kind).order_by(outbox.c.id))
        return [json.loads(r.payload) for r in rows]


LATHE = {"sku": "LATHE-5X", "name": "Five-axis lathe", "category": "machines", "list_price": "480000.00",
         "unit_cost": "312000.00", "currency": "CNY"}


def test_migrations_create_exactly_the_mapped_tables(database_url):
    assert_migrations_match(bootstrap.MIGRATIONS, Base.metadata, database_url)


def test_an_admin_adds_a_product_and_its_event_follows_its_own_schema(orders):
    admin = orders.as_("root", "admin")
    r = admin.post("/products", json=LATHE, headers={"Idempotency-Key": "lathe-1"})
    assert r.status_code == 201, r.json
    product = r.json
    assert r.headers["ETag"] == '"v1"' and r.headers["Location"] == f"/api/v1/products/{product['id']}"
    assert product["unit_cost"] == "312000.00" and product["margin_pct"] == "35.0"
    assert product["active"] is True and product["excluded_from_quota"] is False
    # A replay with the same key answers the first product; no second one, no second event.
    again = admin.post("/products", json=LATHE, headers={"Idempotency-Key": "lathe-1"})
    assert again.status_code == 201 and again.json["id"] == product["id"]
    [created] = _events("product.created")
    assert problems(ORDERS.topic, created) is None
    assert created["subject"] == product["id"] and created["data"]["product"]["sku"] == "LATHE-5X"
    assert created["actor"] == "root"
    # The SKU is unique, whatever its case.
    assert admin.post("/products", json={**LATHE, "sku": "lathe-5x"}).status_code == 409


def test_only_admins_write_the_catalogue(orders):
    product = orders.as_("root", "admin").post("/products", json=LATHE).json
    for role in ("rep", "manager", "executive", "service", "marketing"):
        caller = orders.as_(f"a-{role}", role, teams=["east"])
        assert caller.post("/products", json={**LATHE, "sku": f"X-{role}"}).status_code == 403, role
        assert caller.patch(f"/products/{product['id']}", json={"list_price": "1.00"},
                            headers={"If-Match": '"v1"'}).status_code == 403, role
    assert orders.as_("root", "admin").get(f"/products/{product['id']}").json["list_price"] == "480000.00"


def test_unit_cost_and_margin_only_for_those_who_may_see_them(orders):
    product = orders.as_("root", "admin").post("/products", json=LATHE).json
    marketing = orders.as_("mkt", "marketing")
    assert marketing.get("/products").status_code == 403  # list prices are money too
    assert marketing.get(f"/products/{product['id']}").status_code == 403
    for role in ("rep", "service"):
        caller = orders.as_(f"a-{role}", role, teams=["east"])
        for body in (caller.get(f"/products/{product['id']}").json, caller.get("/products").json["items"][0]):
            assert body["list_price"] == "480000.00", role
            assert "unit_cost" not in body and "margin_pct" not in body, (role, body)
    for role in ("manager", "executive"):
        body = orders.as_(f"a-{role}", role, teams=["east"]).get(f"/products/{product['id']}").json
        assert body["unit_cost"] == "312000.00" and body["margin_pct"] == "35.0", role
    # No cost known: no margin either, but the field is there (null) for those who may see it.
    free = orders.as_("root", "admin").post("/products", json={"sku": "SAMPLE-1", "name": "Sample kit",
                                                              "list_price": "0.00"}).json
    assert free["unit_cost"] is None and free["margin_pct"] is None and free["currency"] == "CNY"


def test_changing_a_product_needs_the_current_version_and_says_what_changed(orders):
    admin = orders.as_("root", "admin")
    product = admin.post("/products", json=LATHE).json
    path = f"/products/{product['id']}"
    assert admin.patch(path, json={"list_price": "500000.00"}).status_code == 428
    assert admin.patch(path, json={"list_price": "500000.00"}, headers={"If-Match": '"v7"'}).status_code == 412
    r = admin.patch(path, json={"list_price": "500000.00", "active": False, "name": LATHE["name"]},
                    headers={"If-Match": '"v1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"v2"'
    assert r.json["list_price"] == "500000.00" and r.json["active"] is False and r.json["margin_pct"] == "37.6"
    [updated] = _events("product.updated")
    assert problems(ORDERS.topic, updated) is None and updated["data"]["changed"] == ["active", "list_price"]
    # A SKU never changes (orders name products by it), nor do server-kept fields.
    for body in ({"sku": "OTHER"}, {"id": product["id"]}, {"version": 9}, {"created_at": "2026-01-01T00:00:00Z"}):
        assert admin.patch(path, json=body, headers={"If-Match": '"v2"'}).status_code == 422, body
    assert admin.patch(path, json={}, headers={"If-Match": '"v2"'}).headers["ETag"] == '"v2"'  # nothing changed
    # DELETE takes it out of the catalogue and keeps it for the orders that name it.
    assert admin.patch(path, json={"active": True}, headers={"If-Match": '"v2"'}).status_code == 200
    assert admin.delete(path).status_code == 204 and admin.delete(path).status_code == 204
    kept = admin.get(path).json
    assert kept["active"] is False and kept["version"] == 4
    assert [e["data"]["changed"] for e in _events("product.updated")][-1] == ["active"]
    for role in ("rep", "manager"):
        assert orders.as_(f"a-{role}", role, teams=["east"]).delete(path).status_code == 403


@pytest.mark.parametrize("bad", [
    {"list_price": "-1.00"}, {"list_price": "12.345"}, {"list_price": 12.5}, {"list_price": "1e3"},
    {"list_price": "1000000000000.00"}, {"unit_cost": "-0.01"}, {"currency": "usd"}, {"currency": "EURO"},
    {"name": ""}, {"name": "x" * 201}, {"sku": ""}, {"sku": "has space"}, {"sku": "x" * 65}, {"sku": 7},
    {"active": "yes"}, {"excluded_from_quota": 1}, {"category": "c" * 101}, {"owner_id": "me"},
])
def test_bad_product_input_is_422_never_a_500(orders, bad):
    r = orders.as_("root", "admin").post("/products", json={**LATHE, **bad})
    assert r.status_code == 422, (bad, r.status_code, r.json)
    assert r.headers["Content-Type"] == "application/problem+json"


def test_the_catalogue_lists_filter_and_page(orders):
    admin = orders.as_("root", "admin")
    for i in range(5):
        admin.post("/products", json={**LATHE, "sku": f"LATHE-{i}", "name": f"Lathe {i}",
                                      "category": "machines" if i % 2 else "spares"})
    old = admin.post("/products", json={**LATHE, "sku": "OLD-1", "name": "Retired drill", "category": "machines"}).json
    admin.patch(f"/products/{old['id']}", json={"active": False}, headers={"If-Match": '"v1"'})
    rep = orders.as_("ann", "rep", teams=["east"])
    first = rep.get("/products?limit=4").json
    second = rep.get(f"/products?limit=4&cursor={first['next_cursor']}").json
    assert [p["sku"] for p in first["items"] + second["items"]] == [
        "LATHE-0", "LATHE-1", "LATHE-2", "LATHE-3", "LATHE-4", "OLD-1"]
    assert second["next_cursor"] is None
    assert [p["sku"] for p in rep.get("/products?category=machines&active=true").json["items"]] == ["LATHE-1", "LATHE-3"]
    assert [p["sku"] for p in rep.get("/products?q=retired").json["items"]] == ["OLD-1"]
    for query in ("active=yes", "limit=0", "limit=201", "cursor=garbage", "colour=red"):
        r = rep.get(f"/products?{query}")
        assert r.status_code in (400, 422), (query, r.status_code)


def test_an_unknown_product_is_404_and_the_service_checks_tokens_itself(orders):
    rep = orders.as_("ann", "rep", teams=["east"])
    assert rep.get("/products/6f0c1a7e-5bd4-4a0e-9d38-3a2c1f1e0b11").status_code == 404
    assert orders.client.get("/api/v1/products").status_code == 401
    stranger = orders.as_("ghost", "admin", register=False)  # signed, but not in the directory replica
    assert stranger.post("/products", json=LATHE).status_code == 401


def test_a_handover_is_answered_though_the_service_has_no_orders_to_move_yet(orders):
    orders.as_("leaver", "rep", teams=["east"])
    orders.as_("heir", "rep", teams=["east"])
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        deliver(handover.directory_handlers(ctx.settings), uow, new_event("handover.requested", "leaver", {
            "handover_id": "h1", "from_user_id": "leaver", "to_user_id": "heir"}, source="gateway"))
        uow.commit()
    [done] = _events("handover.completed")
    assert problems(ORDERS.topic, done) is None
    assert done["data"]["service"] == "orders" and done["data"]["status"] == "completed" and done["data"]["moved"] == 0


# ---- the replica of accounts (crm.opportunities.v1) ------------------------------------------------
def _account_event(kind: str, account_id: str, version: int, **changes) -> dict:
    account = {"id": account_id, "name": "Huadong Machinery", "type": "b2b", "industry": None, "region": "east",
               "tier": "unranked", "owner_id": "ann", "team_id": "east",
               "team": [{"user_id": "sam", "role": "after_sales"}], "created_by": "ann",
               "created_at": "2026-11-30T08:00:00+00:00", "updated_at": "2026-11-30T08:00:00+00:00",
               "version": version, **changes}
    return new_event(kind, account_id, {"account": account, **({"changed": ["name"]} if kind == "account.updated"
                                                               else {})}, source="opportunities")


def _apply(envelope: dict) -> None:
    from services.orders import accounts

    with bootstrap.context().db.uow() as uow:
        deliver(accounts.ACCOUNT_HANDLERS, uow, envelope)
        uow.commit()


def _replica(account_id: str):
    from services.orders.db import AccountMemberReplica, AccountReplica

    with bootstrap.context().db.uow(readonly=True) as uow:
        row = uow.session.get(AccountReplica, uuid.UUID(account_id))
        members = [{"user_id": m.user_id, "role": m.role} for m in uow.session.execute(
            select(AccountMemberReplica).where(AccountMemberReplica.account_id == uuid.UUID(account_id))
            .order_by(AccountMemberReplica.user_id)).scalars()]
        return None if row is None else {"name": row.name, "owner_id": row.owner_id, "team_id": row.team_id,
                                         "members": members, "deleted": row.deleted, "version": row.version}


def test_the_account_replica_follows_account_events_and_ignores_late_old_ones(orders):
    from crmkit.consumer import Reject

    account_id = "2b7f1c2e-0a55-4f0e-8a5e-6f3b9d1c0a01"
    _apply(_account_event("account.created", account_id, 1))
    assert _replica(account_id) == {"name": "Huadong Machinery", "owner_id": "ann", "team_id": "east",
                                    "members": [{"user_id": "sam", "role": "after_sales"}], "deleted": False,
                                    "version": 1}
    _apply(_account_event("account.updated", account_id, 3, name="Huadong Machinery Co.", owner_id="bo",
                          team_id="west", team=[{"user_id": "tom", "role": "tech"}, {"user_id": "tom", "role": "tech"}]))
    _apply(_account_event("account.updated", account_id, 2, name="An older name"))  # late: changes nothing
    now = _replica(account_id)
    assert now["name"] == "Huadong Machinery Co." and now["owner_id"] == "bo" and now["team_id"] == "west"
    assert now["members"] == [{"user_id": "tom", "role": "tech"}]  # the virtual team replaced, once per person
    _apply(_account_event("account.deleted", account_id, 4))
    assert _replica(account_id)["deleted"] is True
    # What it cannot read is refused with the reason (the consumer dead-letters it); other events
    # on the topic are not its business.
    for broken in ({"account": {"id": "not-a-uuid"}}, {"account": None}, {}):
        with pytest.raises(Reject, match=r"invalid account\.updated"):
            _apply(new_event("account.updated", account_id, broken, source="opportunities"))
    with pytest.raises(Reject, match="version 2"):
        _apply({**_account_event("account.created", account_id, 9), "version": 2})
    from crmkit.consumer import Dispatch
    from services.orders import accounts
    assert "opportunity.won" not in Dispatch(accounts.ACCOUNT_HANDLERS).types


# ---- CSV import of the catalogue ------------------------------------------------------------------------
def _upload(caller, text: str, encoding: str = "utf-8"):
    import io

    return caller.post("/products/import", data={"file": (io.BytesIO(text.encode(encoding)), "catalogue.csv")},
                       content_type="multipart/form-data")


def test_a_catalogue_csv_creates_and_updates_products_all_or_nothing(orders):
    admin = orders.as_("root", "admin")
    assert admin.post("/products", json=LATHE).status_code == 201
    # Chinese Excel's headers and encoding: the lathe's price changes, a spindle is new.
    sheet = "物料编码,产品名称,产品线,标准价,成本,不计业绩\nlathe-5x,Five-axis lathe,machines,450000.00,312000.00,否\n" \
            "SPINDLE-1,主轴,parts,2000.00,,是\n"
    r = _upload(admin, sheet, "gb18030")
    assert r.status_code == 200, r.json
    assert r.json == {"created": 1, "updated": 1, "unchanged": 0}
    items = {p["sku"]: p for p in admin.get("/products").json["items"]}
    assert items["LATHE-5X"]["list_price"] == "450000.00" and items["SPINDLE-1"]["name"] == "主轴"
    assert items["SPINDLE-1"]["excluded_from_quota"] is True and items["SPINDLE-1"]["unit_cost"] is None
    published = len(_events("product.created")) + len(_events("product.updated"))
    # The same file again changes nothing and publishes nothing.
    assert _upload(admin, sheet, "gb18030").json == {"created": 0, "updated": 0, "unchanged": 2}
    assert len(_events("product.created")) + len(_events("product.updated")) == published
    # One bad row: nothing is written, and each bad line says why.
    bad = "sku,name,list_price\nNEW-1,New,10.00\nNEW-2,Broken,-5\nNEW-1,Again,11.00\n"
    r = _upload(admin, bad)
    assert r.status_code == 422 and set(r.json["errors"]["rows"]) == {"3", "4"}, r.json
    assert "NEW-1" not in {p["sku"] for p in admin.get("/products").json["items"]}
    for broken, reason in (("name\nx\n", "sku, name and list_price"), ("", "empty"), ("sku,name,list_price\n", "no rows")):
        r = _upload(admin, broken)
        assert r.status_code == 422 and reason in json.dumps(r.json), (broken, r.json)
    assert _upload(admin, "\xff\xfe", "latin-1").status_code == 422
    assert _upload(orders.as_("mia", "manager", teams=["east"], manages=["east"]), sheet).status_code == 403


def test_make_run_seeds_a_demo_catalogue_once(orders):
    from services.orders import demo

    ctx = bootstrap.context()
    for expected in (len(demo.CATALOGUE), 0):  # a second run finds the catalogue and adds nothing
        with ctx.db.uow() as uow:
            assert demo.seed(uow, ctx.settings) == expected
            uow.commit()
    items = orders.as_("mia", "manager", teams=["east"], manages=["east"]).get("/products").json["items"]
    assert {p["sku"] for p in items} == {row[0] for row in demo.CATALOGUE}
    assert next(p for p in items if p["sku"] == "DEMO-UNIT")["excluded_from_quota"] is True
    assert len(_events("product.created")) == len(demo.CATALOGUE)
