"""The handover saga of every record-owning service (crmkit.handover.Handovers), with a fake unit of
work: no database, milliseconds. The same saga runs against both databases in
tests/integration/test_lead_life.py and test_side_channels.py, and end to end in
tests/e2e/test_concurrency_pg.py."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from crmkit.consumer import Dispatch
from crmkit.events import new_event
from crmkit.handover import Handovers
from tests.unit.fakes import FakeUnitOfWork


@dataclass
class User:
    id: str
    active: bool = True
    team_id: str | None = "east"


@dataclass
class Team:
    id: str


@dataclass
class Completed:
    handover_id: str
    from_user_id: str
    to_user_id: str
    completed_at: object = None


def _saga(moved: list, answers: list, counts=None) -> Handovers:
    def move(uow, leaver, heir, team, actor, handover_id):
        moved.append((leaver, heir, team, handover_id))
        return counts or {"moved": 3}

    return Handovers("leads", User, Team, Completed, move=move,
                     answer=lambda uow, handover_id, data, actor: answers.append((handover_id, data, actor)))


def _request(to_user: str = "bea") -> dict:
    return new_event("handover.requested", "al", {"handover_id": "h1", "from_user_id": "al", "to_user_id": to_user},
                     source="gateway", actor="mia")


def test_a_handover_moves_the_leavers_records_remembers_it_and_answers_completed():
    moved, answers = [], []
    uow = FakeUnitOfWork([User("al", active=False), User("bea", team_id="west")])
    result = _saga(moved, answers, {"moved": 5, "opportunities": 3, "accounts": 2}).hand_over(uow, _request())
    assert result == {"moved": 5, "opportunities": 3, "accounts": 2}
    assert moved == [("al", "bea", "west", "h1")]  # to the successor's team
    remembered = uow.session.get(Completed, "h1")
    assert (remembered.from_user_id, remembered.to_user_id) == ("al", "bea")
    (handover_id, data, actor), = answers
    assert (handover_id, actor, data["status"], data["moved"], data["accounts"]) == ("h1", "mia", "completed", 5, 2)


def test_a_successor_no_longer_active_gets_nothing_and_the_handover_fails():
    moved, answers = [], []
    uow = FakeUnitOfWork([User("al"), User("bea", active=False)])
    assert _saga(moved, answers).hand_over(uow, _request()) == {"moved": 0}
    assert moved == [] and uow.session.get(Completed, "h1") is None  # nothing moved, nothing remembered
    (_, data, _), = answers
    assert data["status"] == "failed" and "not active" in data["failure"]


def test_a_successor_the_replica_does_not_know_yet_is_retried_not_dead_lettered():
    """LookupError, not Reject: their user.created may still be on another partition."""
    uow = FakeUnitOfWork([User("al")])
    with pytest.raises(LookupError, match="not in the directory"):
        _saga([], []).hand_over(uow, _request("cy"))


def test_the_directory_table_routes_handover_requests_and_directory_changes():
    saga = _saga([], [])
    table = Dispatch(saga.handlers())
    assert table.types == {"user.created", "user.updated", "user.deactivated", "team.created", "team.updated",
                           "handover.requested"}
    assert table.handler_for(_request()).__func__ is Handovers.hand_over
    assert table.handler_for(new_event("team.updated", "t1", {}, source="gateway")).__func__ is Handovers.apply_change
