"""Stage moves and checklists (services/opportunities/pipeline.py) as use cases, with the fake unit of
work and in-memory repositories: no database, milliseconds. The same flows run against SQLite and
PostgreSQL in tests/integration/test_opportunities_api.py and through the gateway in tests/e2e."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from crmkit.auth import Principal
from crmkit.errors import Conflict, Forbidden, NotFound, StaleVersion, ValidationFailed
from crmkit.settings import load_settings
from services.opportunities import pipeline
from services.opportunities.db import (
    MemberRepository,
    Opportunity,
    OpportunityMember,
    OpportunityRepository,
    PipelineDocument,
)
from services.opportunities.visit_progress import VisitProgressRepository
from tests.unit.fakes import FakeUnitOfWork, FakeVisitProgress

ENTERED = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
ANN = Principal(user_id="ann", role="rep", teams=("east",))
BO = Principal(user_id="bo", role="rep", teams=("west",))
MGR_EAST = Principal(user_id="mgr-east", role="manager", teams=("east",), manages=("east",))


class FakeOpportunityRepository:
    """Opportunities in the fake session, seen as the real repository sees them for the roles these
    tests use: a rep their own deals and the deals they are on, a manager their teams' (the whole
    rule, executives and marketing included, is tested against the databases)."""

    def __init__(self, session, principal: Principal):
        self.session, self.principal = session, principal
        session.locked = getattr(session, "locked", set())  # what was read FOR UPDATE, as a change must be

    def _visible(self, opp: Opportunity) -> bool:
        on_it = (OpportunityMember, (opp.id, self.principal.user_id)) in self.session.rows
        return (opp.deleted_at is None
                and (opp.owner_id == self.principal.user_id or on_it or opp.team_id in self.principal.manages))

    def get(self, opportunity_id: uuid.UUID, *, for_update: bool = False) -> Opportunity | None:
        opp = self.session.get(Opportunity, opportunity_id)
        if opp is None or not self._visible(opp):
            return None
        if for_update:
            self.session.locked.add(opp.id)
        return opp


class FakeMemberRepository:
    def __init__(self, session):
        self.session = session

    def team(self, opportunity_id: uuid.UUID) -> list[dict]:
        return sorted(({"user_id": m.user_id, "role": m.role} for (kind, _), m in self.session.rows.items()
                       if kind is OpportunityMember and m.opportunity_id == opportunity_id),
                      key=lambda m: m["user_id"])


@pytest.fixture
def settings(monkeypatch):
    monkeypatch.setenv("CRM_TOPIC_PREFIX", "")
    return load_settings("opportunities")


def _deal(stage: str = "qualification", *, done: dict | None = None, status: str = "open") -> Opportunity:
    return Opportunity(id=uuid.uuid4(), account_id=uuid.uuid4(), name="华东智联 core network", stage=stage,
                       probability=10, amount=Decimal("120000.00"), currency="CNY",
                       expected_close_date=dt.date(2027, 3, 31), region="华东", products=[], status=status,
                       lost_reason=None, source_lead_id=None, checklist_done=done or {}, stage_entered_at=ENTERED,
                       closed_at=None, cycle_days=None, expense_total=Decimal("0"), version=4, owner_id="ann",
                       team_id="east", created_by="ann", created_at=ENTERED, updated_at=ENTERED, deleted_at=None)


def _uow(*rows) -> FakeUnitOfWork:
    return FakeUnitOfWork(rows, repositories={OpportunityRepository: FakeOpportunityRepository,
                                              MemberRepository: FakeMemberRepository,
                                              VisitProgressRepository: FakeVisitProgress})


def _any_version(_version: int) -> None:
    pass


def _expect_version(expected: int):
    def check(current: int) -> None:
        if current != expected:
            raise StaleVersion(f"the opportunity is at version {current}")
    return check


QUALIFIED = {"qualification:budget_confirmed": True, "qualification:decision_maker_identified": True}


def test_a_move_past_a_done_checklist_changes_stage_and_probability_and_says_how_long_it_sat(settings):
    deal = _deal(done=QUALIFIED)
    helper = OpportunityMember(opportunity_id=deal.id, user_id="tess", role="tech")
    uow = _uow(deal, helper)
    moved = pipeline.move_stage(uow, settings, ANN, deal.id, "needs_analysis", _any_version)
    assert moved is deal and (deal.stage, deal.probability) == ("needs_analysis", 20)
    assert deal.stage_entered_at > ENTERED and deal.updated_at == deal.stage_entered_at
    (topic, changed), = uow.published
    assert topic == "crm.opportunities.v1" and changed["type"] == "opportunity.stage_changed"
    data = changed["data"]
    assert (data["from"], data["to"]) == ("qualification", "needs_analysis")
    assert data["time_in_stage_seconds"] == int((deal.stage_entered_at - ENTERED).total_seconds())
    # Who is on the deal travels with it: it decides who else may see the event's subject.
    assert data["opportunity"]["team"] == [{"user_id": "tess", "role": "tech"}]
    assert not uow.committed  # the caller commits
    assert deal.id in uow.session.locked  # read FOR UPDATE: two moves at once are one after the other
    assert uow.flushes_before == [1]  # flushed first: the event carries the version the UPDATE made


def test_a_required_item_not_done_stops_a_forward_move_and_names_the_item(settings):
    deal = _deal(done={"qualification:budget_confirmed": True})
    uow = _uow(deal)
    with pytest.raises(Conflict, match="decision_maker_identified") as refused:
        pipeline.move_stage(uow, settings, ANN, deal.id, "needs_analysis", _any_version)
    assert refused.value.errors == {"checklist": ["qualification/decision_maker_identified: Decision maker identified"]}
    assert deal.stage == "qualification" and uow.published == []


def test_skipping_stages_does_not_skip_their_checks(settings):
    deal = _deal(done=QUALIFIED)  # needs_analysis's "needs documented" is not done
    with pytest.raises(Conflict, match="needs_analysis/needs_documented"):
        pipeline.move_stage(_uow(deal), settings, ANN, deal.id, "quote", _any_version)


def test_moving_back_needs_no_checklist(settings):
    deal = _deal("quote")
    uow = _uow(deal)
    pipeline.move_stage(uow, settings, ANN, deal.id, "qualification", _any_version)
    assert (deal.stage, deal.probability) == ("qualification", 10)
    assert [e["data"]["to"] for _, e in uow.published] == ["qualification"]


def test_the_pipeline_admins_wrote_is_the_one_moves_follow(settings):
    stages = {"stages": [{"key": "new", "label": "New", "probability": 5, "checklist": []},
                         {"key": "won_over", "label": "Won over", "probability": 95, "checklist": []}]}
    deal = _deal("new")
    pipeline.move_stage(_uow(deal, PipelineDocument(name="pipeline", body=stages, version=2)), settings, ANN,
                        deal.id, "won_over", _any_version)
    assert (deal.stage, deal.probability) == ("won_over", 95)
    other = _deal("new")
    with pytest.raises(ValidationFailed, match="no stage 'quote'"):  # a default stage, not one of these
        pipeline.move_stage(_uow(other, PipelineDocument(name="pipeline", body=stages, version=2)),
                            settings, ANN, other.id, "quote", _any_version)


@pytest.mark.parametrize("status", ["won", "lost"])
def test_a_closed_deal_does_not_move(settings, status):
    deal = _deal(status=status)
    uow = _uow(deal)
    with pytest.raises(Conflict, match=f"the opportunity is {status}"):
        pipeline.move_stage(uow, settings, ANN, deal.id, "needs_analysis", _any_version)
    assert uow.published == []


def test_a_stale_version_is_refused_before_anything_changes(settings):
    deal = _deal(done=QUALIFIED)
    uow = _uow(deal)
    with pytest.raises(StaleVersion):
        pipeline.move_stage(uow, settings, ANN, deal.id, "needs_analysis", _expect_version(3))
    assert deal.stage == "qualification" and uow.published == []


def test_the_owners_manager_moves_it_a_team_member_may_not_and_another_team_does_not_see_it(settings):
    deal = _deal(done=QUALIFIED)
    helper = Principal(user_id="tess", role="rep", teams=("support",))
    uow = _uow(deal, OpportunityMember(opportunity_id=deal.id, user_id="tess", role="tech"))
    with pytest.raises(Forbidden):
        pipeline.move_stage(uow, settings, helper, deal.id, "needs_analysis", _any_version)
    # Not 403: whether the deal exists is not BO's to learn. (Here the fake repository decides what BO
    # sees; the real rule is tested against both databases in tests/integration.)
    with pytest.raises(NotFound):
        pipeline.move_stage(uow, settings, BO, deal.id, "needs_analysis", _any_version)
    assert uow.published == []
    pipeline.move_stage(uow, settings, MGR_EAST, deal.id, "needs_analysis", _any_version)
    assert deal.stage == "needs_analysis" and uow.published[0][1]["actor"] == "mgr-east"


def test_ticking_an_item_records_it_under_the_current_stage(settings):
    deal = _deal()
    uow = _uow(deal)
    pipeline.tick_checklist(uow, settings, ANN, deal.id, "budget_confirmed", True)
    assert deal.checklist_done == {"qualification:budget_confirmed": True}
    (_, updated), = uow.published
    assert updated["type"] == "opportunity.updated" and updated["data"]["changed"] == ["checklist"]
    assert deal.id in uow.session.locked and uow.flushes_before == [1]
    with pytest.raises(NotFound, match="no checklist item 'quote_sent' in stage 'qualification'"):
        pipeline.tick_checklist(uow, settings, ANN, deal.id, "quote_sent", True)
