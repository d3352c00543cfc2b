"""What the rep's day is made of (services/opportunities/day_facts.py) as use cases, with the fake unit
of work: the pipeline ledger and stage moves a deal's events leave, and the other services' events
kept as facts (a replay, an older version, a broken event). The same run against both databases in
tests/integration/test_visits.py and through the edge in tests/e2e/visits_story.py."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from crmkit.consumer import Reject
from crmkit.db import utcnow
from crmkit.events import new_event
from services.opportunities import daily_reports, day_facts, visits
from services.opportunities.day_db import KnownLead, OrderFact, PaymentFact, PipelineChange, StageMove
from services.opportunities.db import Opportunity
from services.opportunities.visit_progress import VisitProgressRepository
from services.opportunities.visit_schemas import parse_week
from tests.unit.fakes import FakeUnitOfWork, FakeVisitProgress

T = dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC)


def _uow(*rows) -> FakeUnitOfWork:
    return FakeUnitOfWork(rows, repositories={VisitProgressRepository: FakeVisitProgress})


def _deal(amount="100.00", owner="ann", team="east", status="open") -> Opportunity:
    return Opportunity(id=uuid.uuid4(), account_id=uuid.uuid4(), owner_id=owner, team_id=team, stage="qualification",
                       amount=Decimal(amount), status=status, deleted_at=None)


def _ledger(uow) -> list[tuple[str, Decimal]]:
    return [(c.owner_id, c.delta) for c in uow.rows_of(PipelineChange)]


def test_a_deals_pipeline_changes_are_written_as_differences_and_sum_to_what_it_adds_now():
    uow, deal = _uow(), _deal()
    day_facts.track(uow, "opportunity.created", deal, {})
    assert _ledger(uow) == [("ann", Decimal("100.00"))]
    day_facts.track(uow, "opportunity.updated", deal, {"changed": ["checklist"]})  # nothing the pipeline sees
    assert len(_ledger(uow)) == 1
    deal.amount = Decimal("250.00")
    day_facts.track(uow, "opportunity.updated", deal, {"changed": ["amount"]})
    deal.owner_id, deal.team_id = "cy", "west"  # a handover: the amount leaves one owner for another
    day_facts.track(uow, "opportunity.updated", deal, {"changed": ["owner_id"]})
    assert _ledger(uow)[1:] == [("ann", Decimal("-100.00")), ("ann", Decimal("250.00")),
                                ("ann", Decimal("-250.00")), ("cy", Decimal("250.00"))]
    deal.status = "won"
    day_facts.track(uow, "opportunity.won", deal, {})
    totals: dict = {}
    for owner, delta in _ledger(uow):
        totals[owner] = totals.get(owner, 0) + delta
    assert totals == {"ann": 0, "cy": 0}  # closed: it adds nothing to anyone's open pipeline
    assert [(m.from_stage, m.to_stage, m.owner_id) for m in uow.rows_of(StageMove)] == [("qualification", "won", "cy")]


def test_stage_moves_are_remembered_with_the_deals_owner_and_account():
    uow, deal = _uow(), _deal()
    day_facts.track(uow, "opportunity.stage_changed", deal, {"from": "qualification", "to": "needs_analysis"})
    [move] = uow.rows_of(StageMove)
    assert (move.from_stage, move.to_stage, move.account_id, move.owner_id) == (
        "qualification", "needs_analysis", deal.account_id, "ann")


def _lead_event(kind, lead_id, version, owner="ann", **lead):
    return {**new_event(kind, str(lead_id), {"lead": {
        "id": str(lead_id), "owner_id": owner, "team_id": "east", "company": "Co", "source": "web", "status": "new",
        "version": version, "created_at": T.isoformat(), **lead}}, source="leads"), "time": T}


def test_a_lead_is_known_at_its_latest_version_and_an_older_event_changes_nothing():
    uow, lead_id = _uow(), uuid.uuid4()
    day_facts.learn_lead(uow, _lead_event("lead.created", lead_id, 1))
    day_facts.learn_lead(uow, _lead_event("lead.assigned", lead_id, 3, owner="bo"))
    day_facts.learn_lead(uow, _lead_event("lead.updated", lead_id, 2, owner="ann"))  # late, older
    [known] = uow.rows_of(KnownLead)
    assert (known.owner_id, known.version) == ("bo", 3)
    day_facts.learn_lead(uow, _lead_event("lead.deleted", lead_id, 4, owner="bo"))
    assert known.status == "deleted"
    with pytest.raises(Reject):
        day_facts.learn_lead(uow, _lead_event("lead.created", "not-a-uuid", 1))


def _order_event(kind, order_id, **extra):
    order = {"id": order_id, "account_id": str(uuid.uuid4()), "owner_id": "ann", "team_id": "east",
             "credited_to": "amy", "total": "500.00"}
    return {**new_event(kind, order_id, {"order": order, **extra}, source="orders"), "time": T}


def test_an_order_counts_once_for_whom_it_is_credited_to_and_a_cancellation_takes_it_back():
    uow, order_id = _uow(), str(uuid.uuid4())
    day_facts.learn_order(uow, _order_event("order.confirmed", order_id))
    later = _order_event("order.confirmed", order_id)
    later["time"] = T + dt.timedelta(days=1)
    day_facts.learn_order(uow, later)  # a replay under a new event id: the first confirmation stands
    [fact] = uow.rows_of(OrderFact)
    assert (fact.owner_id, fact.total, fact.confirmed_at, fact.cancelled_at) == ("amy", Decimal("500.00"), T, None)
    day_facts.learn_order(uow, _order_event("order.cancelled", order_id))
    assert fact.cancelled_at == T


def test_a_payment_is_collected_on_the_day_paid_once_and_one_without_its_payment_is_refused():
    uow, order_id, payment_id = _uow(), str(uuid.uuid4()), str(uuid.uuid4())
    payment = {"id": payment_id, "amount": "120.50", "paid_on": "2026-12-01"}
    for _ in range(2):
        day_facts.learn_payment(uow, _order_event("order.payment_recorded", order_id, payment=payment))
    [fact] = uow.rows_of(PaymentFact)
    assert (fact.amount, fact.paid_on, fact.owner_id) == (Decimal("120.50"), dt.date(2026, 12, 1), "amy")
    with pytest.raises(Reject):
        day_facts.learn_payment(uow, _order_event("order.payment_recorded", order_id))


def test_ids_that_follow_from_what_they_name():
    visit = uuid.uuid4()
    assert visits.lead_activity_id(visit) == visits.lead_activity_id(visit) != visits.lead_activity_id(uuid.uuid4())
    day = dt.date(2026, 12, 2)
    assert daily_reports.report_id("ann", day) == daily_reports.report_id("ann", day)
    assert daily_reports.report_id("ann", day) != daily_reports.report_id("ann", day + dt.timedelta(days=1))
    assert parse_week("2026-W49") == dt.date(2026, 11, 30) and parse_week("2026-W53") == dt.date(2026, 12, 28)
    for bad in ("2025-W53", "2026-W00", "2026-49", "W49"):
        with pytest.raises(ValueError):
            parse_week(bad)


def test_a_done_visit_knows_how_soon_the_reps_own_progress_on_the_account_followed():
    from services.opportunities import visit_progress
    from services.opportunities.day_db import Visit

    deal, checked_in = _deal(), utcnow() - dt.timedelta(minutes=1)
    visit = Visit(id=uuid.uuid4(), owner_id="ann", team_id="east", account_id=deal.account_id, status="done",
                  checked_in_at=checked_in, followed_after=None)
    elsewhere = Visit(id=uuid.uuid4(), owner_id="ann", team_id="east", account_id=uuid.uuid4(), status="done",
                      checked_in_at=checked_in, followed_after=None)
    uow = _uow(visit, elsewhere)
    earlier = StageMove(id=uuid.uuid4(), opportunity_id=deal.id, account_id=deal.account_id, owner_id="ann",
                        team_id="east", from_stage="a", to_stage="b", moved_at=checked_in - dt.timedelta(hours=1))
    theirs = StageMove(id=uuid.uuid4(), opportunity_id=uuid.uuid4(), account_id=deal.account_id, owner_id="bo",
                       team_id="west", from_stage="a", to_stage="b", moved_at=checked_in + dt.timedelta(seconds=30))
    former_team = StageMove(id=uuid.uuid4(), opportunity_id=uuid.uuid4(), account_id=deal.account_id, owner_id="ann",
                            team_id="west", from_stage="a", to_stage="b", moved_at=checked_in + dt.timedelta(seconds=20))
    for move in (earlier, theirs, former_team):
        uow.session.add(move)
    visit_progress.refresh(uow, "ann", deal.account_id)
    assert visit.followed_after is None  # before the visit, another rep's, or of another team: not what followed it
    deal.stage = "qualification"
    day_facts.track(uow, "opportunity.stage_changed", deal, {"from": "qualification", "to": "needs_analysis"})
    assert 60 <= visit.followed_after <= 120 and elsewhere.followed_after is None  # the move made just now
