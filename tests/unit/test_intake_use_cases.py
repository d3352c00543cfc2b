"""Intake (services/leads/intake.py) as a use case, with a fake unit of work: a new lead is scored,
routed and announced; a duplicate in the same batch or already stored is merged (it fills gaps,
overwrites nothing, adds a touch), unless whoever brings it may not change it: then it is a claim
on it (nothing written into it, its owner and manager told). The dedupe lookups a batch already
made (prefetch_duplicates) are batch state, so these run without a database; the same flows run
on SQLite and PostgreSQL in tests/integration/test_lead_life.py and through Kafka in tests/e2e."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from crmkit.auth import Principal
from crmkit.settings import load_settings
from services.leads import intake
from services.leads.batch import Batch
from services.leads.db import AssignmentCursor, ClaimRepository, DirectoryTeam, DirectoryUser, DuplicateClaim, Lead
from services.leads.dedupe import DEDUPE_KEYS, keys_for
from tests.unit.fakes import FakeUnitOfWork

NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
SCORING = [{"name": "reachable by email", "field": "email", "op": "present", "value": None, "points": 10},
           {"name": "large deal", "field": "estimated_value", "op": "gte", "value": 100000, "points": 15}]
ROUTING = [{"name": "east region", "match": {"region": "east"}, "assign_to": {"team_id": "east"}}]


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("CRM_TOPIC_PREFIX", "")
    return load_settings("leads")


class FakeClaimRepository:
    def __init__(self, session):
        self.session = session

    def by(self, lead_id: uuid.UUID, user_id: str) -> DuplicateClaim | None:
        return next((c for (kind, _), c in self.session.rows.items()
                     if kind is DuplicateClaim and c.lead_id == lead_id and c.claimed_by == user_id), None)

    def add(self, claim: DuplicateClaim) -> None:
        self.session.add(claim)


def _uow(*prospects: dict, stored=()) -> FakeUnitOfWork:
    """A unit of work whose batch already looked these prospects' keys up (as prefetch_duplicates
    does for a consumer poll), finding `stored`."""
    uow = FakeUnitOfWork([*stored, DirectoryUser(id="ann", role="rep", team_id="east", active=True),
                          DirectoryTeam(id="east", name="East", parent_team_id=None, manager_id="mgr-east")],
                         repositories={ClaimRepository: FakeClaimRepository})
    uow.state = Batch(rules={"scoring": SCORING, "assignment": ROUTING}, reps={"east": ["ann", "amy"]},
                      cursors={"east": AssignmentCursor(team_id="east", last_user_id=None)})
    for prospect in prospects:
        uow.state.prefetched.update(f"{c}:{v}" for c, v in keys_for(prospect).items() if v and c in DEDUPE_KEYS)
    for lead in stored:
        intake._index(uow, lead)
    return uow


def _marketing(uow, settings, fields):
    return intake.intake(uow, settings, dict(fields), owner_id=None, team_id=None, created_by="marketing:hub",
                         actor="hub", via="marketing")


def test_a_new_marketing_lead_is_scored_routed_and_announced(settings):
    fields = {"company": "Acme", "contact_name": "Zhao", "email": "zhao@acme.cn", "region": "east",
              "estimated_value": Decimal("200000.00")}
    uow = _uow(fields)
    result = _marketing(uow, settings, fields)
    lead = result.lead
    assert not result.merged and lead in uow.session.added
    assert (lead.score, lead.score_public) == (25, 10)  # the money rule counts, but not for marketing's view
    assert (lead.owner_id, lead.team_id, lead.assigned_by_rule) == ("amy", "east", "east region")
    assert [e["type"] for _, e in uow.published] == ["lead.created", "lead.assigned"]


def test_the_same_prospect_twice_in_one_batch_is_one_lead_with_two_touches(settings):
    first = {"company": "Acme", "contact_name": "Zhao", "email": "zhao@acme.cn", "region": "east"}
    again = {"company": "Acme", "contact_name": "Zhao", "email": "ZHAO@acme.cn", "phone": "+86 138 0000 0000",
             "interest": "lathes"}
    uow = _uow(first, again)
    lead = _marketing(uow, settings, first).lead
    merged = _marketing(uow, settings, again)
    assert merged.merged and merged.lead is lead and lead.touches == 2
    assert (lead.phone, lead.interest) == ("+86 138 0000 0000", "lathes")  # gaps filled
    assert len([row for row in uow.session.added if isinstance(row, Lead)]) == 1
    assert [e["type"] for _, e in uow.published] == ["lead.created", "lead.assigned", "lead.merged"]
    assert uow.published[-1][1]["data"]["filled"] == ["interest", "phone"]


def _stored(**fields) -> Lead:
    lead = Lead(id=uuid.uuid4(), company="Acme", contact_name="Zhao", email="zhao@acme.cn", phone=None,
                region="east", industry=None, source="web", campaign=None, interest="mills", quoted_price=None,
                estimated_value=None, currency="CNY", status="contacted", score=10, score_reasons=[], score_public=10,
                owner_id="ann", team_id="east", created_by="ann", follow_up_due_at=NOW, last_activity_at=None,
                touches=1, external_id=None, created_at=NOW, updated_at=NOW, version=4, assigned_by_rule=None,
                converted_at=None, account_id=None, contact_id=None, opportunity_id=None, conversion_error=None,
                **fields)
    for column, value in keys_for({"company": lead.company, "contact_name": lead.contact_name,
                                   "email": lead.email, "phone": lead.phone}).items():
        setattr(lead, column, value)
    return lead


def test_a_duplicate_of_a_stored_lead_fills_its_gaps_and_overwrites_nothing(settings):
    stored = _stored()
    prospect = {"company": "Acme Ltd", "email": "zhao@acme.cn", "interest": "lathes", "phone": "+86 21 5555 0000"}
    uow = _uow(prospect, stored=[stored])
    result = _marketing(uow, settings, prospect)
    assert result.merged and result.lead is stored
    assert (stored.company, stored.interest, stored.phone) == ("Acme", "mills", "+86 21 5555 0000")
    assert stored.touches == 2 and stored.status == "contacted" and stored.owner_id == "ann"
    (_, merged), = uow.published
    assert merged["type"] == "lead.merged" and merged["data"]["via"] == "marketing"


def test_marketing_does_not_reopen_a_disqualified_lead_but_its_owner_does(settings):
    ann = Principal(user_id="ann", role="rep", teams=("east",))
    for principal, expected in ((None, "disqualified"), (ann, "new")):
        stored = _stored()
        stored.status = "disqualified"
        prospect = {"email": "zhao@acme.cn"}
        uow = _uow(prospect, stored=[stored])
        intake.intake(uow, settings, dict(prospect), owner_id=None if principal is None else "ann",
                      team_id="east", created_by="x", actor="x", via="api" if principal else "marketing",
                      principal=principal)
        assert stored.status == expected


def test_a_rep_of_another_team_bringing_the_prospect_again_claims_it_and_changes_nothing(settings):
    """The collision rule for leads: the owner and their manager learn that someone else brought the
    prospect; nothing the other rep brought is written into the lead, whose owner stays."""
    bo = Principal(user_id="bo", role="rep", teams=("west",))
    stored = _stored()
    prospect = {"company": "Acme", "email": "zhao@acme.cn", "interest": "lathes", "phone": "+86 21 5555 0000"}
    uow = _uow(prospect, stored=[stored])
    result = intake.intake(uow, settings, dict(prospect), owner_id="bo", team_id="west", created_by="bo",
                           actor="bo", via="api", principal=bo)
    assert not result.merged and result.lead is stored and result.claim is not None
    assert (stored.interest, stored.phone, stored.touches, stored.owner_id) == ("mills", None, 1, "ann")
    assert result.claim.brought == prospect and (result.claim.claimed_by, result.claim.claimed_role) == ("bo", "rep")
    (_, claimed), = uow.published
    assert claimed["type"] == "lead.duplicate_claimed"
    assert {k: claimed["data"][k] for k in ("owner_id", "team_id", "manager_id", "claimed_by", "via")} == {
        "owner_id": "ann", "team_id": "east", "manager_id": "mgr-east", "claimed_by": "bo", "via": "api"}

    # The same rep again: one claim, brought up to date, not announced twice.
    again = intake.intake(uow, settings, {"email": "zhao@acme.cn", "industry": "machining"}, owner_id="bo",
                          team_id="west", created_by="bo", actor="bo", via="import", principal=bo)
    assert again.claim is result.claim and len(uow.rows_of(DuplicateClaim)) == 1
    assert result.claim.brought["industry"] == "machining" and result.claim.via == "import"
    assert len(uow.published) == 1


def test_the_owners_manager_bringing_the_prospect_merges_it(settings):
    manager = Principal(user_id="mgr-east", role="manager", teams=("east",), manages=("east",))
    stored = _stored()
    prospect = {"email": "zhao@acme.cn", "phone": "+86 21 5555 0000"}
    uow = _uow(prospect, stored=[stored])
    result = intake.intake(uow, settings, dict(prospect), owner_id="mgr-east", team_id="east",
                           created_by="mgr-east", actor="mgr-east", via="api", principal=manager)
    assert result.merged and result.claim is None and stored.phone == "+86 21 5555 0000"
    assert uow.rows_of(DuplicateClaim) == [] and [e["type"] for _, e in uow.published] == ["lead.merged"]
