"""Collision detection scores candidates before it takes the match-key locks (issue 12: look-alike
writers wait for each other only for the short part). What another writer commits while this one
waits for the locks must still count, as it is when the locks are granted. PostgreSQL only: on
SQLite a writing transaction holds the database's one write lock from its start, so nothing can
commit in between (and lock_keys takes nothing)."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import update

from crmkit.auth import Principal
from services.opportunities import bootstrap, deals, detection
from services.opportunities.db import Opportunity
from tests.integration.service_client import service_client

pytestmark = pytest.mark.postgres
CLOSE = dt.date(2026, 12, 15)
PRODUCTS = [{"sku": "SW-9300", "qty": 2, "unit_price": "120000.00"}, {"sku": "AP-7", "qty": 40, "unit_price": "3000.00"}]
BO = Principal(user_id="bo", role="rep", teams=("west",))


@pytest.fixture
def opps(postgres, topic_prefix, monkeypatch):
    url = postgres.create_database()
    try:
        with service_client(bootstrap, "opportunities", url, topic_prefix, monkeypatch) as client:
            yield client
    finally:
        postgres.drop_database(url)


def _body(account_id: str, close: dt.date = CLOSE) -> dict:
    return {"account_id": account_id, "name": "core network", "amount": "480000.00",
            "expected_close_date": close.isoformat(), "products": PRODUCTS}


def _meanwhile(monkeypatch, action):
    """Run `action` once, in its own committed transaction, just before the next writer takes its
    match-key locks: as if it had committed while the writer was scoring its candidates."""
    real, done = detection.lock_keys, []

    def lock_keys(uow, values):
        if not done:
            done.append(True)
            ctx = bootstrap.context()
            with ctx.db.uow() as other:
                action(other, ctx.settings)
                other.commit()
        return real(uow, values)

    monkeypatch.setattr(detection, "lock_keys", lock_keys)
    return done


def test_a_look_alike_deal_committed_while_waiting_for_the_locks_is_found(opps, monkeypatch):
    ann, bo = opps.as_("ann", "rep", teams=["east"]), opps.as_("bo", "rep", teams=["west"])
    anns_account = ann.post("/accounts", json={"name": "华东智联系统集成有限公司", "region": "华东"}).json["id"]
    bos_account = bo.post("/accounts", json={"name": "华东智联系统集成有限公司", "region": "华东"}).json["id"]
    arrived = []

    def bo_creates(uow, settings):
        # The service layer takes fields as the API's schema loads them.
        fields = {"account_id": uuid.UUID(bos_account), "name": "core network", "amount": Decimal("480000.00"),
                  "expected_close_date": CLOSE,
                  "products": [{**p, "unit_price": Decimal(p["unit_price"])} for p in PRODUCTS]}
        arrived.append(deals.create_opportunity(uow, settings, BO, fields).id)

    done = _meanwhile(monkeypatch, bo_creates)
    r = ann.post("/opportunities", json=_body(anns_account))
    assert r.status_code == 201, r.json
    assert done and r.json["collisions"] == [str(arrived[0])]


def test_a_candidate_changed_while_waiting_for_the_locks_is_judged_as_it_is_now(opps, monkeypatch):
    ann, bo = opps.as_("ann", "rep", teams=["east"]), opps.as_("bo", "rep", teams=["west"])
    anns_account = ann.post("/accounts", json={"name": "华东智联系统集成有限公司", "region": "华东"}).json["id"]
    bos_account = bo.post("/accounts", json={"name": "华东智联系统集成有限公司", "region": "华东"}).json["id"]
    bos = bo.post("/opportunities", json=_body(bos_account)).json["id"]
    # Control: as things stand, ann's look-alike deal collides with bo's.
    control = ann.post("/opportunities", json=_body(anns_account))
    assert control.json["collisions"] == [bos]

    def bo_moves_the_close_date(uow, settings):
        # Five months later: out of the window of a pair whose owners cannot see each other's deals.
        uow.session.execute(update(Opportunity).where(Opportunity.id == uuid.UUID(bos))
                            .values(expected_close_date=CLOSE + dt.timedelta(days=150), version=Opportunity.version + 1))

    done = _meanwhile(monkeypatch, bo_moves_the_close_date)
    r = ann.post("/opportunities", json=_body(anns_account))
    assert r.status_code == 201, r.json
    assert done and r.json["collisions"] == []
