"""Conversion's two halves as use cases, with a fake unit of work (tests/unit/fakes.py): no database,
milliseconds. The same flows run against SQLite and PostgreSQL in tests/integration and through
Kafka in tests/e2e."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from crmkit.consumer import Reject
from crmkit.events import new_event
from crmkit.settings import load_settings
from services.leads import conversion as lead_conversion
from services.leads.db import DirectoryUser as LeadsUser
from services.leads.db import Lead
from services.opportunities import conversion as opp_conversion
from services.opportunities.db import DirectoryUser as OppsUser
from services.opportunities.db import Opportunity
from tests.unit.fakes import FakeUnitOfWork

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("CRM_TOPIC_PREFIX", "")
    return load_settings("leads")


def _converted_lead(opportunity_id: uuid.UUID) -> Lead:
    return Lead(id=uuid.uuid4(), company="华东智联", contact_name="Zhao", email=None, phone=None, region="华东",
                industry=None, source="referral", campaign=None, interest=None, quoted_price=None,
                estimated_value=Decimal("80000.00"), currency="CNY", status="converted", score=40, score_reasons=[],
                score_public=40, owner_id="ann", team_id="east", created_by="ann", follow_up_due_at=None,
                last_activity_at=None, touches=1, external_id=None, created_at=NOW, updated_at=NOW, version=3,
                assigned_by_rule=None, converted_at=NOW, account_id=uuid.uuid4(), contact_id=uuid.uuid4(),
                opportunity_id=opportunity_id, conversion_error=None, converted_from_status="qualified")


def _rejection(lead: Lead, opportunity_id: uuid.UUID) -> dict:
    return new_event("lead.conversion_rejected", lead.id, {
        "lead_id": str(lead.id), "account_id": str(lead.account_id), "contact_id": str(lead.contact_id),
        "opportunity_id": str(opportunity_id), "reason": "the account cannot take this deal"},
        source="opportunities", actor="ann")


# ---- the leads service rolls a refused conversion back ---------------------------------------------------
def test_a_refused_conversion_reopens_the_lead_with_the_reason(settings):
    opportunity_id = uuid.uuid4()
    lead = _converted_lead(opportunity_id)
    uow = FakeUnitOfWork([lead, LeadsUser(id="ann", role="rep", team_id="east", active=True)])
    assert lead_conversion.roll_back_conversion(uow, settings, _rejection(lead, opportunity_id)) is lead
    assert (lead.status, lead.account_id, lead.contact_id, lead.opportunity_id, lead.converted_at) == (
        "qualified", None, None, None, None)
    assert lead.conversion_error == "the account cannot take this deal" and lead.owner_id == "ann"
    assert lead.follow_up_due_at is not None  # its owner is asked to follow it up again
    (_, updated), = uow.published
    assert updated["type"] == "lead.updated" and updated["data"]["reason"] == "conversion_rejected"
    assert "opportunity_id" in updated["data"]["changed"]


def test_a_refusal_of_an_older_conversion_leaves_the_lead_alone(settings):
    lead = _converted_lead(uuid.uuid4())  # converted again since, into another opportunity
    uow = FakeUnitOfWork([lead])
    assert lead_conversion.roll_back_conversion(uow, settings, _rejection(lead, uuid.uuid4())) is None
    assert lead.status == "converted" and uow.published == []


def test_a_refusal_that_names_no_opportunity_is_dead_lettered(settings):
    lead = _converted_lead(uuid.uuid4())
    bad = _rejection(lead, lead.opportunity_id)
    del bad["data"]["opportunity_id"]
    with pytest.raises(Reject, match=r"invalid lead\.conversion_rejected"):
        lead_conversion.roll_back_conversion(FakeUnitOfWork([lead]), settings, bad)


# ---- the opportunities service applies, or refuses, a conversion -----------------------------------------
def _lead_converted(*, existing: bool, owner: str | None = "ann") -> dict:
    lead_id = uuid.uuid4()
    return new_event("lead.converted", lead_id, {
        "lead": {}, "owner_id": owner, "team_id": "east",
        "account": {"id": str(uuid.uuid4()), "existing": existing, "name": "华东智联", "type": "b2b",
                    "industry": None, "region": "华东"},
        "contact": {"id": str(uuid.uuid4()), "name": "Zhao", "email": None, "phone": None, "is_primary": True},
        "opportunity": {"id": str(uuid.uuid4()), "name": "core network", "amount": "80000.00", "currency": "CNY",
                        "expected_close_date": "2026-12-15", "region": "华东", "source_lead_id": str(lead_id),
                        "products": []}}, source="leads", actor="ann")


def test_a_conversion_into_an_account_that_does_not_exist_is_refused_with_the_one_reason(settings):
    converted = _lead_converted(existing=True)
    uow = FakeUnitOfWork([OppsUser(id="ann", role="rep", team_id="east", active=True)])
    assert opp_conversion.apply_lead_converted(uow, settings, converted) is None
    assert uow.session.added == []  # nothing created
    (_, refusal), = uow.published
    assert refusal["type"] == "lead.conversion_rejected" and refusal["subject"] == converted["subject"]
    # One reason for every refusal: it must not tell whether a hidden account exists.
    assert refusal["data"]["reason"] == opp_conversion.CONVERSION_REFUSED


def test_a_second_delivery_of_a_conversion_creates_nothing(settings):
    converted = _lead_converted(existing=False)
    done = Opportunity(id=uuid.UUID(converted["data"]["opportunity"]["id"]))
    uow = FakeUnitOfWork([done])
    assert opp_conversion.apply_lead_converted(uow, settings, converted) is done
    assert uow.published == []


def test_a_conversion_without_an_owner_is_dead_lettered(settings):
    with pytest.raises(Reject, match="without an owner"):
        opp_conversion.apply_lead_converted(FakeUnitOfWork(), settings, _lead_converted(existing=False, owner=None))
