"""Events are contracts of their own (issue 13, CONTRACT §5): payload schemas per type and version,
independent of the API's schemas; docs/asyncapi.yaml is written from them; consumers dispatch from
one table keyed by (type, version). Every event the services publish in the integration tests is
also checked against its schema (tests/conftest.py, published_events_match_their_schemas)."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from crmkit.consumer import Dispatch, Reject
from crmkit.directory import directory_dispatch
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.events import new_event
from crmkit.settings import load_settings
from gateway.events import DIRECTORY
from services.leads import events as lead_events
from services.leads import schemas as lead_schemas
from services.leads.db import Lead
from services.leads.events import LEAD_CONVERSION_REJECTED, LEADS, MARKETING
from services.notifications import raisers
from services.opportunities import conversion, tiering
from services.opportunities import events as opp_events
from services.opportunities import schemas as opp_schemas
from services.opportunities.db import Opportunity
from services.opportunities.events import OPPORTUNITIES
from services.orders import accounts as order_accounts
from services.orders import actuals as order_actuals
from services.orders import won
from services.orders.events import ORDERS
from tests.support.event_catalogs import problems
from tools import asyncapi

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def _lead() -> Lead:
    return Lead(id=uuid.uuid4(), company="华东智联系统集成有限公司", contact_name="Zhao", email="zhao@example.com",
                phone=None, region="华东", industry="it", source="referral", campaign=None, interest="switches",
                quoted_price=None, estimated_value=Decimal("480000.00"), currency="CNY", status="new", score=70,
                score_reasons=[{"rule": "large deal", "points": 15, "field": "estimated_value"}], score_public=55,
                owner_id="ann", team_id="east", created_by="ann", follow_up_due_at=NOW, last_activity_at=None,
                touches=1, external_id=None, created_at=NOW, updated_at=NOW, version=1, assigned_by_rule=None,
                converted_at=None, account_id=None, contact_id=None, opportunity_id=None, conversion_error=None)


def _opportunity() -> Opportunity:
    opp = Opportunity(id=uuid.uuid4(), account_id=uuid.uuid4(), name="core network", stage="qualification",
                      probability=10, amount=Decimal("480000.00"), currency="CNY",
                      expected_close_date=dt.date(2026, 12, 15), region="华东",
                      products=[{"sku": "SW-9300", "qty": 2, "unit_price": "120000.00"}], status="open",
                      lost_reason=None, source_lead_id=None, checklist_done={"budget": True}, stage_entered_at=NOW,
                      closed_at=None, expense_total=Decimal("0"), version=1, owner_id="ann", team_id="east",
                      created_by="ann", created_at=NOW, updated_at=NOW)
    opp.team = [{"user_id": "tom", "role": "tech"}]
    return opp


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("CRM_TOPIC_PREFIX", "")
    return load_settings("leads")


def _payloads(settings) -> dict:
    lead, opp = _lead(), _opportunity()
    return {"lead.created": lead_events.lead_event(settings, "lead.created", lead, actor="ann")[1]["data"],
            "opportunity.updated": opp_events.event(settings, "opportunity.updated", opp.id,
                                                    {"opportunity": opp, "changed": ["amount"]}, actor="ann")[1]["data"]}


# ---- payloads are not the API's representation --------------------------------------------------------
def test_renaming_or_adding_an_api_field_changes_no_event_payload(settings, monkeypatch):
    before = _payloads(settings)
    api_before = lead_schemas.LeadSchema().dump(_lead())
    # Rename a field in both API schemas (as a refactoring of the HTTP representation would) and add one.
    for schema, field in ((lead_schemas.LeadSchema, "company"), (opp_schemas.OpportunitySchema, "amount")):
        renamed = schema._declared_fields[field]
        monkeypatch.setattr(renamed, "data_key", f"{field}_renamed")
    monkeypatch.setitem(lead_schemas.LeadSchema._declared_fields, "extra",
                        lead_schemas.fields.Constant("new in the API"))
    api_after = lead_schemas.LeadSchema().dump(_lead())
    assert "company_renamed" in api_after and "company" not in api_after and "extra" in api_after  # it took effect
    assert set(api_after) != set(api_before)
    after = _payloads(settings)
    strip = {"lead.created": ("lead", "id"), "opportunity.updated": ("opportunity", "id")}
    for kind, (key, generated) in strip.items():  # the two runs built different records' ids
        before[kind][key].pop(generated), after[kind][key].pop(generated)
        before[kind][key].pop("account_id", None), after[kind][key].pop("account_id", None)
    assert after == before
    assert after["lead.created"]["lead"]["company"] == "华东智联系统集成有限公司"
    assert after["opportunity.updated"]["opportunity"]["amount"] == "480000.00"


def test_a_lead_event_carries_the_whole_lead_whoever_caused_it(settings):
    """Events go to services, not to a caller: the full score and the money, never a role's view;
    with the public score and the marks a consumer needs to show it to marketing."""
    data = lead_events.lead_event(settings, "lead.created", _lead(), actor="marketing-1")[1]["data"]
    assert data["lead"]["score"] == 70 and data["lead"]["estimated_value"] == "480000.00"
    assert data["lead"]["score_public"] == 55
    published = asyncapi.document()["components"]["schemas"]["LeadV1"]["properties"]
    hidden = {name for name, prop in published.items() if "marketing" in prop.get("x-hidden-from", [])}
    assert hidden == {"quoted_price", "estimated_value", "score", "score_reasons"}


# ---- every event is declared and matches its schema ------------------------------------------------------
def test_an_event_that_does_not_match_its_schema_is_reported(settings):
    topic, good = lead_events.lead_event(settings, "lead.created", _lead(), actor="ann")
    assert problems(topic, good) is None
    missing = {**good, "data": {"lead": {k: v for k, v in good["data"]["lead"].items() if k != "status"}}}
    assert "status" in str(problems(topic, missing))
    extra = {**good, "data": {**good["data"], "debug": True}}
    assert "debug" in str(problems(topic, extra))
    undeclared = {**good, "type": "lead.exploded"}
    assert "lead.exploded" in str(problems(topic, undeclared))
    newer = {**good, "version": 2}
    assert "version 2" in str(problems(topic, newer))
    # What marshmallow would load but the published JSON Schema refuses: money as a JSON number.
    as_number = {**good, "data": {"lead": {**good["data"]["lead"], "estimated_value": 480000}}}
    assert "estimated_value" in str(problems(topic, as_number)["published JSON Schema"])


def test_publishing_an_undeclared_event_fails_loudly(settings):
    with pytest.raises(KeyError, match=r"lead\.exploded"):
        lead_events.leads_event(settings, "lead.exploded", uuid.uuid4(), {}, actor="ann")


def test_the_asyncapi_document_is_current():
    assert asyncapi.TARGET.read_text() == asyncapi.render(), "run `python -m tools.asyncapi`"


def test_the_asyncapi_document_is_valid_asyncapi_3():
    """Against the official JSON Schema of AsyncAPI 3.0.0 (tests/support/asyncapi-3.0.0.schema.json,
    from the npm package @asyncapi/specs 6.11.1, Apache-2.0)."""
    schema = json.loads((Path(__file__).parent.parent / "support" / "asyncapi-3.0.0.schema.json").read_text())
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in Draft7Validator(schema).iter_errors(asyncapi.document())]
    assert errors == []


def test_the_asyncapi_document_describes_every_declared_event():
    doc = asyncapi.document()
    for catalog in asyncapi.CATALOGS:
        channel = doc["channels"][catalog.topic.replace(".", "-")]
        assert channel["address"] == catalog.topic
        for kind in catalog.events.values():
            message = doc["components"]["messages"][asyncapi.message_id(catalog, kind)]
            assert message["payload"]["properties"]["source"]["const"] == catalog.source
            assert message["payload"]["properties"]["type"]["const"] == kind.type
            assert message["payload"]["properties"]["data"]["$ref"].endswith("/" + kind.schema.__name__)
    lead = doc["components"]["schemas"]["LeadV1"]
    assert "status" in lead["required"] and lead["properties"]["estimated_value"]["type"] == ["string", "null"]


# ---- consumers read only what their producers declare ------------------------------------------------
def test_every_event_a_consumer_dispatches_is_declared_by_its_producer():
    consumed = [
        (LEADS, set(conversion.handlers(None))),  # the opportunities service reads lead.converted
        (OPPORTUNITIES, {(LEAD_CONVERSION_REJECTED, 1)}),  # the leads service reads the refusals
        (DIRECTORY, set(directory_dispatch(None, None))),  # every service's replica and handovers
        (ORDERS, set(tiering.ORDER_HANDLERS)),  # the opportunities service's tiers read order revenue
        # the orders service reads accounts (its replica) and won deals (draft orders)
        (OPPORTUNITIES, set(order_accounts.ACCOUNT_HANDLERS) | set(won.handlers(None))),
        # performance: the orders service's own order events, new accounts and activities
        (ORDERS, set(order_actuals.ORDER_EVENTS)), (OPPORTUNITIES, set(order_actuals.DEAL_EVENTS)),
        (LEADS, set(order_actuals.LEAD_EVENTS)),
        # notifications: what raises one, and the dates reminders keep
        (LEADS, set(raisers.leads_handlers(None))), (OPPORTUNITIES, set(raisers.opportunities_handlers(None))),
        (ORDERS, set(raisers.orders_handlers(None))),
    ]
    for catalog, keys in consumed:
        assert keys <= set(catalog.events), f"{sorted(keys - set(catalog.events))} not declared by {catalog.source}"
    for catalog in (LEADS, OPPORTUNITIES, ORDERS):  # the gateway reads each service's handover answers
        assert (HANDOVER_COMPLETED, 1) in catalog.events
    assert set(MARKETING.events) == {(lead_events.MARKETING_LEAD_SUBMITTED, 1)}
    # What the AsyncAPI document says about receivers matches the tables above.
    receivers = {(t, k) for (t, k), who in asyncapi.RECEIVERS.items() if who}
    assert ("crm.leads.v1", "lead.converted") in receivers and ("crm.opportunities.v1", LEAD_CONVERSION_REJECTED) in receivers
    assert {("crm.orders.v1", kind) for kind, _ in tiering.ORDER_HANDLERS} <= receivers
    assert {("crm.opportunities.v1", kind) for kind, _ in won.handlers(None)} <= receivers
    assert {("crm.orders.v1", kind) for kind, _ in raisers.orders_handlers(None)} <= receivers


def test_the_order_events_the_opportunities_service_reads_are_version_1():
    assert set(tiering.ORDER_HANDLERS) == {("order.confirmed", 1), ("order.paid", 1), ("order.cancelled", 1)}


# ---- one dispatch table keyed by (type, version) -------------------------------------------------------------
def _envelope(kind: str, version: int = 1) -> dict:
    return new_event(kind, "s-1", {}, source="test", version=version)


def test_dispatch_finds_the_handler_of_a_type_and_version():
    seen = []
    table = Dispatch({("a.happened", 1): lambda uow, e: seen.append(("v1", e["type"])),
                      ("a.happened", 2): lambda uow, e: seen.append(("v2", e["type"]))})
    table.handler_for(_envelope("a.happened", 2))(None, _envelope("a.happened", 2))
    assert seen == [("v2", "a.happened")] and table.types == {"a.happened"}


def test_dispatch_dead_letters_an_unknown_version_with_the_versions_it_reads():
    table = Dispatch({("a.happened", 1): lambda uow, e: None})
    with pytest.raises(Reject, match=r"unsupported version 3 of a\.happened \(this consumer reads version 1\)"):
        table.handler_for(_envelope("a.happened", 3))


def test_dispatch_rejects_other_types_only_where_they_are_a_producers_mistake():
    table = Dispatch({("a.happened", 1): lambda uow, e: None}, others_rejected=True)
    with pytest.raises(Reject, match=r"unexpected event type 'b\.happened'"):
        table.handler_for(_envelope("b.happened"))
