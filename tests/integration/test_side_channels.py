"""Issue 11's side channels, attacked at the services directly (in-process, SQLite and PostgreSQL):
what a record the caller may not see must not tell them, and what a token may not claim.
The same attacks through the gateway are in tests/e2e/test_side_channels_e2e.py."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from crmkit.auth import issue_token
from services.leads import bootstrap as leads_bootstrap
from services.opportunities import bootstrap, detection
from tests.infra import JWT_SECRET
from tests.integration.service_client import As, deliver, service_client

CLOSE = dt.date(2026, 12, 15)
SKUS = [{"sku": "SW-9300", "qty": 2, "unit_price": "120000.00"}, {"sku": "AP-7", "qty": 40, "unit_price": "3000.00"}]


@pytest.fixture
def opps(database_url, topic_prefix, monkeypatch):
    monkeypatch.setenv("CRM_DIRECTORY_CATCH_UP_SECONDS", "0.2")
    monkeypatch.setenv("CRM_DIRECTORY_REFRESH_SECONDS", "0.1")
    with service_client(bootstrap, "opportunities", database_url, topic_prefix, monkeypatch) as client:
        yield client


@pytest.fixture
def leads(database_url, topic_prefix, monkeypatch):
    monkeypatch.setenv("CRM_DIRECTORY_CATCH_UP_SECONDS", "0.2")
    monkeypatch.setenv("CRM_DIRECTORY_REFRESH_SECONDS", "0.1")
    with service_client(leads_bootstrap, "leads", database_url, topic_prefix, monkeypatch) as client:
        yield client


def _org(opps):
    """Ann (east, managed by Mia) and Bo (west, managed by Wes), and an executive who sees both."""
    return (opps.as_("ann", "rep", teams=["east"]), opps.as_("bo", "rep", teams=["west"]),
            opps.as_("mia", "manager", teams=["east"], manages=["east"]),
            opps.as_("wes", "manager", teams=["west"], manages=["west"]), opps.as_("erin", "executive"))


def _deal(client, account_name: str, *, amount="480000.00", close=CLOSE, products=SKUS):
    account = client.post("/accounts", json={"name": account_name, "region": "华东"}).json
    r = client.post("/opportunities", json={"account_id": account["id"], "name": "core network", "amount": amount,
                                             "expected_close_date": close.isoformat(), "products": products})
    assert r.status_code == 201, r.json
    return r.json


def _edit(client, path: str, changes: dict):
    etag = client.get(path).headers["ETag"]
    r = client.patch(path, json=changes, headers={"If-Match": etag})
    assert r.status_code == 200, r.json
    return r.json


def _drain_rechecks():
    """What the worker's recheck loop does when it wakes."""
    ctx = bootstrap.context()
    detection.drain_rechecks(ctx.db, ctx.settings)


# ---- 1. the collision oracle ---------------------------------------------------------------------------
def test_no_sequence_of_a_reps_own_edits_recovers_anything_of_a_hidden_colliding_deal(opps):
    ann, bo, _mia, wes, erin = _org(opps)
    hidden = _deal(ann, "华东智联系统集成有限公司")
    mine = _deal(bo, "上海博远信息系统集成有限公司", amount="500000.00")
    assert mine["collisions"] == [hidden["id"]]
    expected = [{"opportunity_id": hidden["id"], "owner_id": "ann", "manager_id": "mia", "visible": False}]
    path = f"/opportunities/{mine['id']}"
    observed = []

    def observe():
        observed.append((bo.get(f"{path}/collisions").json["items"], bo.get(path).json["collisions"]))

    observe()
    # The finding's probes: the amount stepped towards the hidden one, the close date moved day by day
    # through the window, the quoted products changed one at a time, and the customer renamed step by
    # step towards the hidden name.
    for amount in ("100000.00", "400000.00", "470000.00", "479000.00", "480000.00", "900000.00"):
        _edit(bo, path, {"amount": amount})
        observe()
    for days in (-90, -61, -59, -30, -1, 0, 1, 59, 61, 200):
        _edit(bo, path, {"expected_close_date": (CLOSE + dt.timedelta(days=days)).isoformat()})
        observe()
    for products in (SKUS[:1], [], [{"sku": "OTHER", "qty": 1, "unit_price": "1.00"}], SKUS):
        _edit(bo, path, {"products": products})
        observe()
    for name in ("华", "华东", "华东智", "华东智联", "华东智联系统集成有限公司", "Something Else Ltd"):
        _edit(bo, f"/accounts/{mine['account_id']}", {"name": name})
        _drain_rechecks()
        observe()
    assert all(items == expected and ids == [hidden["id"]] for items, ids in observed), observed
    assert bo.get(f"/opportunities/{hidden['id']}").status_code == 404
    # Whoever sees both deals sees why they were flagged.
    full = erin.get(f"{path}/collisions").json["items"]
    assert full[0]["visible"] is True and {"score", "signals", "reasons", "account_name"} <= set(full[0])
    assert "signals" not in wes.get(f"{path}/collisions").json["items"][0]


def test_fresh_probe_deals_answer_only_the_coarse_question_a_collision_is(opps):
    """Review of the fix: each new deal asks "is there a hidden deal like this?". The answer may
    depend on the region, two products quoted together, the quarter and an exact customer name;
    never on the amount or the exact date."""
    ann, bo, *_ = _org(opps)
    hidden = _deal(ann, "华东智联系统集成有限公司")

    def probe(**changes) -> bool:
        deal = _deal(bo, changes.pop("name", f"Probe {time.monotonic_ns()}"), **changes)
        assert bo.delete(f"/opportunities/{deal['id']}").status_code == 204
        return deal["collisions"] == [hidden["id"]]

    assert {probe(amount=a) for a in ("1.00", "479000.00", "480000.00", "999999.00")} == {True}
    quarter_start = dt.date(CLOSE.year, 3 * ((CLOSE.month - 1) // 3) + 1, 1)
    assert {probe(close=quarter_start + dt.timedelta(days=d)) for d in (0, 20, 45, 70, 89)} == {True}
    assert probe(products=SKUS[:1]) is False
    assert probe(name="华东智联", products=[]) is True  # the very same distinctive name
    assert probe(name="华东智", products=[]) is False   # a resemblance is no answer


def test_the_order_of_collisions_says_nothing_about_their_scores(opps):
    ann, bo, mia, *_ = _org(opps)
    mine = _deal(mia, "上海博远信息系统集成有限公司")
    hidden = _deal(bo, "华东智联系统集成有限公司")  # mia cannot see bo's deal
    seen = _deal(ann, "华东智联系统集成有限公司")   # mia sees ann's (her team)
    orders = set()
    for amount in ("1.00", "300000.00", "479000.00", "480000.00", "900000.00"):
        _edit(ann, f"/opportunities/{seen['id']}", {"amount": amount})
        orders.add(tuple(mia.get(f"/opportunities/{mine['id']}").json["collisions"]))
    assert len(orders) == 1 and set(next(iter(orders))) >= {hidden["id"]}


def test_a_collision_is_dismissed_only_by_someone_who_may_change_both_deals_and_stays_dismissed(opps):
    ann, bo, _mia, wes, erin = _org(opps)
    hidden = _deal(ann, "华东智联系统集成有限公司")
    mine = _deal(bo, "上海博远信息系统集成有限公司", amount="500000.00")
    dismissal = f"/opportunities/{mine['id']}/collisions/{hidden['id']}/dismissal"
    assert bo.post(dismissal, json={}).status_code == 403
    assert wes.post(dismissal, json={}).status_code == 404  # wes cannot see ann's deal
    assert erin.post(dismissal, json={"reason": "two projects"}).status_code == 204
    assert erin.post(dismissal, json={}).status_code == 404  # nothing flagged any more
    assert bo.get(f"/opportunities/{mine['id']}").json["collisions"] == []
    assert ann.get(f"/opportunities/{hidden['id']}").json["collisions"] == []
    _edit(bo, f"/opportunities/{mine['id']}", {"amount": "480000.00"})
    assert bo.get(f"/opportunities/{mine['id']}").json["collisions"] == []


def test_deals_whose_owners_see_each_other_clear_as_soon_as_they_differ(opps):
    ann, _bo, mia, _wes, _erin = _org(opps)
    own = _deal(mia, "华东智联系统集成有限公司")  # mia sees ann's deals (her team); ann does not see mia's
    anns = _deal(ann, "华东智联系统集成有限公司")
    assert anns["collisions"] == [own["id"]]
    # Put ann on mia's deal's virtual team: now each owner sees the other's deal, and an edit that
    # makes them differ clears the pair at once.
    r = mia.put(f"/opportunities/{own['id']}/team", json={"members": [{"user_id": "ann", "role": "sales"}]})
    assert r.status_code == 200
    later = (CLOSE + dt.timedelta(days=150)).isoformat()
    assert _edit(ann, f"/opportunities/{anns['id']}", {"expected_close_date": later})["collisions"] == []
    assert mia.get(f"/opportunities/{own['id']}").json["collisions"] == []


# ---- 5. the squat deal ---------------------------------------------------------------------------------
def test_a_virtual_team_member_cannot_open_a_deal_of_their_own_on_the_account(opps):
    ann, bo, mia, _wes, _erin = _org(opps)
    account = ann.post("/accounts", json={"name": "Shared Customer"}).json
    assert ann.put(f"/accounts/{account['id']}/team", json={"members": [{"user_id": "bo", "role": "tech"}]}
                   ).status_code == 200
    assert bo.get(f"/accounts/{account['id']}").status_code == 200
    squat = bo.post("/opportunities", json={"account_id": account["id"], "name": "mine now", "amount": "1.00"})
    assert squat.status_code == 403
    assert ann.put(f"/accounts/{account['id']}/team", json={"members": []}).status_code == 200
    assert bo.get(f"/accounts/{account['id']}").status_code == 404  # no deal of his keeps it in sight
    assert mia.post("/opportunities", json={"account_id": account["id"], "name": "team deal", "amount": "1.00"}
                    ).status_code == 201


# ---- 8. a rename of an account with many deals -----------------------------------------------------------
def test_renaming_an_account_with_200_deals_answers_fast_and_never_holds_other_writers(opps):
    ann, bo, _mia, _wes, _erin = _org(opps)
    account = ann.post("/accounts", json={"name": "Big Account", "region": "华东"}).json
    for i in range(200):
        r = ann.post("/opportunities", json={"account_id": account["id"], "name": f"site {i}", "amount": "480000.00",
                                             "expected_close_date": CLOSE.isoformat(), "products": SKUS})
        assert r.status_code == 201
    other = _deal(bo, "上海博远信息系统集成有限公司", amount="10.00",
                  products=[{"sku": "X-1", "qty": 1, "unit_price": "10.00"}])
    started = time.perf_counter()
    _edit(ann, f"/accounts/{account['id']}", {"name": "上海博远信息系统集成有限公司"})
    rename_seconds = time.perf_counter() - started
    assert rename_seconds < 0.2, rename_seconds

    drained = threading.Event()
    errors = []

    def drain():
        try:
            _drain_rechecks()
        except Exception as exc:  # reported below
            errors.append(exc)
        drained.set()

    worker = threading.Thread(target=drain)
    worker.start()
    waits = []
    while not drained.is_set():
        started = time.perf_counter()
        _edit(bo, f"/opportunities/{other['id']}", {"name": f"edit {len(waits)}"})
        waits.append(time.perf_counter() - started)
    worker.join()
    assert not errors and len(waits) >= 5
    # Before: the rename itself held every deal's detection in its transaction (1.6-1.9 s), so one
    # write waited for all of it and few got in meanwhile. Now each batch is short: writes get in
    # all along (the count above), nine in ten at once. The worst one may still catch a slow moment
    # of a busy 2-core machine (1.02 s once, on SQLite, in a full run): it only has to stay below
    # what the whole hold used to cost.
    waits.sort()
    assert waits[int(len(waits) * 0.9)] < 0.2 and waits[-1] < 1.5, waits[-5:]
    # The rechecks ran: bo's deal, now on a customer of the same name, collides with ann's.
    _edit(bo, f"/opportunities/{other['id']}", {"products": SKUS, "amount": "480000.00"})
    assert len(bo.get(f"/opportunities/{other['id']}").json["collisions"]) >= 1


# ---- 6. tokens the directory contradicts ----------------------------------------------------------------
def _forged(client, user: str, role: str, **claims) -> As:
    token = issue_token(secret=JWT_SECRET, user_id=user, role=role, **claims)
    return As(client.client, {"Authorization": f"Bearer {token}"})


def test_the_leads_service_refuses_revoked_inflated_and_unknown_tokens(leads):
    _attack_tokens(leads, "leads")


def test_the_opportunities_service_refuses_revoked_inflated_and_unknown_tokens(opps):
    _attack_tokens(opps, "opportunities")


def _attack_tokens(client, service: str):
    path = "/leads" if service == "leads" else "/opportunities"
    client.as_("ann", "rep", teams=["east"])
    client.as_("bo", "rep", teams=["west"])
    mia = client.as_("mia", "manager", teams=["east"], manages=["east"])
    body = ({"company": "Wests Own"} if service == "leads"
            else {"account_id": client.as_("bo", "rep", teams=["west"]).post(
                "/accounts", json={"name": "Wests Own"}).json["id"], "name": "d", "amount": "1.00"})
    west_record = client.as_("bo", "rep", teams=["west"]).post(path, json=body).json["id"]
    # A password reset (the replica learns the new token version): the old token is refused.
    stale = client.as_("ann", "rep", teams=["east"])
    client.directory.put_user("ann", "rep", "east", token_version=2)
    time.sleep(0.15)  # the replica is read again every CRM_DIRECTORY_REFRESH_SECONDS
    assert stale.get(path).status_code == 401
    assert stale.post(path, json={"company": "x"} if service == "leads" else {}).status_code == 401
    assert client.as_("ann", "rep", teams=["east"], register=False, token_version=2).get(path).status_code == 200
    # A validly signed token claiming to manage west, or to sit in it: the replica says east only.
    # Refused outright, as the gateway refuses it (the edge sends service routes straight here).
    inflated = _forged(client, "mia", "manager", teams=["east"], manages=["east", "west"], extra={"ver": 1})
    assert inflated.get(f"{path}/{west_record}").status_code == 401
    assert inflated.get(path).status_code == 401
    moved = _forged(client, "mia", "manager", teams=["west"], manages=["east"], extra={"ver": 1})
    assert moved.get(path).status_code == 401
    assert mia.get(f"{path}/{west_record}").status_code == 404
    # A rep's id with role=admin, and a user who does not exist.
    assert _forged(client, "bo", "admin", extra={"ver": 1}).get(path).status_code == 401
    assert _forged(client, "nobody", "executive", extra={"ver": 1}).get(path).status_code == 401
    assert _forged(client, "bo", "rep", teams=["west"]).get(path).status_code == 401  # no version at all


# ---- issue 12: a handover with a memory ------------------------------------------------------------------
def test_what_arrives_after_a_handover_goes_to_the_successor(opps):
    from crmkit.events import new_event
    from services.opportunities import conversion, handover
    from tests.integration.test_opportunities_api import _converted

    leaver = opps.as_("leaver", "rep", teams=["east"])
    opps.as_("heir", "rep", teams=["east"])
    ctx = bootstrap.context()

    def directory_event(kind: str, subject: str, data: dict) -> None:
        with ctx.db.uow() as uow:
            deliver(handover.directory_handlers(ctx.settings), uow, new_event(kind, subject, data, source="gateway"))
            uow.commit()

    directory_event("handover.requested", "leaver", {"handover_id": "h1", "from_user_id": "leaver",
                                                     "to_user_id": "heir"})
    gap = leaver.post("/accounts", json={"name": "Made after the handover"}).json
    assert gap["owner_id"] == "leaver"  # still active: a handover does not capture their future work
    directory_event("user.deactivated", "leaver", {"user": {"id": "leaver", "active": False}})
    heir = opps.as_("heir", "rep", teams=["east"], register=False)
    assert heir.get(f"/accounts/{gap['id']}").json["owner_id"] == "heir"  # moved at the deactivation
    late = _converted(owner_id="leaver", team_id="east")  # converted just before the handover reached leads
    with ctx.db.uow() as uow:
        conversion.apply_lead_converted(uow, ctx.settings, late)
        uow.commit()
    assert heir.get(f"/opportunities/{late['data']['opportunity']['id']}").json["owner_id"] == "heir"


def test_a_handover_chain_and_a_cycle_end_with_someone_active(opps):
    from crmkit.directory import successor_of
    from services.opportunities.db import CompletedHandover, DirectoryUser

    for user, active in (("a", False), ("b", False), ("c", True), ("x", False), ("y", False)):
        opps.directory.put_user(user, "rep", "east", active=active)
    ctx = bootstrap.context()
    with ctx.db.uow() as uow:
        for i, (src, dst) in enumerate((("a", "b"), ("b", "c"), ("x", "y"), ("y", "x"))):
            uow.session.add(CompletedHandover(handover_id=f"h{i}", from_user_id=src, to_user_id=dst))
        uow.commit()
    with ctx.db.uow(readonly=True) as uow:
        assert successor_of(uow.session, CompletedHandover, DirectoryUser, "a") == "c"
        assert successor_of(uow.session, CompletedHandover, DirectoryUser, "c") == "c"
        assert successor_of(uow.session, CompletedHandover, DirectoryUser, "x") in ("x", "y")  # no loop
