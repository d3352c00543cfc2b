"""Routing a lead (services/leads/routing.py) as a use case, with a fake unit of work: what a
consumer batch or an import chunk knows of a team (its active reps, their open leads, the
round-robin cursor) is the transaction's batch state, so a batch of leads spreads without a query
each. No database, milliseconds; the same routing runs on SQLite and PostgreSQL in
tests/integration/test_lead_life.py."""
from __future__ import annotations

import datetime as dt
import uuid

from services.leads import routing
from services.leads.batch import Batch
from services.leads.db import AssignmentCursor, DirectoryUser, Lead
from tests.unit.fakes import FakeUnitOfWork

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)


def _lead(**fields) -> Lead:
    values = {"id": uuid.uuid4(), "status": "new", "region": "east", "industry": None, "source": "web", "score": 30,
              "owner_id": None, "team_id": None, "created_at": NOW, **fields}
    return Lead(**values)


def _uow(rules: list[dict], *, reps: list[str], loads: dict[str, int] | None = None, users=()) -> FakeUnitOfWork:
    uow = FakeUnitOfWork(users)
    uow.state = Batch(rules={"assignment": rules}, reps={"east": reps},
                      loads={"east": loads} if loads is not None else {},
                      cursors={"east": AssignmentCursor(team_id="east", last_user_id=None)})
    return uow


EAST = {"name": "east region", "match": {"region": "east"}, "assign_to": {"team_id": "east"}}


def test_round_robin_takes_the_team_s_reps_in_turn_across_a_batch():
    uow = _uow([EAST], reps=["cy", "al", "bea"])
    leads = [_lead() for _ in range(4)]
    assert [routing.route(uow, lead) for lead in leads] == ["east region"] * 4
    assert [lead.owner_id for lead in leads] == ["al", "bea", "cy", "al"]  # sorted ids, wrapping around
    assert all(lead.team_id == "east" and lead.follow_up_due_at is not None for lead in leads)
    assert uow.state.cursors["east"].last_user_id == "al"


def test_least_loaded_counts_what_the_batch_already_gave():
    uow = _uow([{**EAST, "strategy": "least_loaded"}], reps=["al", "bea"], loads={"al": 2, "bea": 0})
    leads = [_lead() for _ in range(3)]
    for lead in leads:
        routing.route(uow, lead)
    assert [lead.owner_id for lead in leads] == ["bea", "bea", "al"]  # 2-0, 2-1, then the tie goes to al
    assert uow.state.loads["east"] == {"al": 3, "bea": 2}


def test_a_rule_naming_an_inactive_user_is_passed_over():
    rules = [{"name": "to bo", "match": {}, "assign_to": {"user_id": "bo"}}, EAST]
    uow = _uow(rules, reps=["al"], users=[DirectoryUser(id="bo", role="rep", team_id="west", active=False)])
    lead = _lead()
    assert routing.route(uow, lead) == "east region" and lead.owner_id == "al"


def test_a_rule_naming_an_active_user_gives_them_the_lead_in_their_team():
    rules = [{"name": "to bo", "match": {"source": "web"}, "assign_to": {"user_id": "bo"}}, EAST]
    uow = _uow(rules, reps=["al"], users=[DirectoryUser(id="bo", role="rep", team_id="west", active=True)])
    lead = _lead()
    assert routing.route(uow, lead) == "to bo" and (lead.owner_id, lead.team_id) == ("bo", "west")


def test_a_team_without_an_active_rep_keeps_the_lead_in_its_queue():
    uow = _uow([EAST], reps=[])
    lead = _lead()
    assert routing.route(uow, lead) == "east region"
    assert (lead.owner_id, lead.team_id, lead.follow_up_due_at) == (None, "east", None)


def test_no_matching_rule_leaves_the_lead_unassigned():
    uow = _uow([EAST], reps=["al"])
    lead = _lead(region="west")
    assert routing.route(uow, lead) is None and lead.owner_id is None and lead.team_id is None


def test_giving_a_lead_away_moves_its_count_between_reps():
    uow = _uow([EAST], reps=["al", "bea"], loads={"al": 1, "bea": 0})
    lead = _lead(owner_id="al", team_id="east")
    assert routing.give(uow, lead, "bea", "east", None) == "al"
    assert uow.state.loads["east"] == {"al": 0, "bea": 1}
