"""Collision bookkeeping (services/opportunities/pairs.py): what one detection clears, writes and
announces, given the candidates' verdicts and the pairs already recorded. No database: the same
rules run against SQLite and PostgreSQL in tests/integration/test_opportunities_api.py and
test_collision_locking.py."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

from services.opportunities.collisions import Match
from services.opportunities.pairs import Verdict, plan


def _match(score: float) -> Match:
    return Match(score=score, signals={"name": 1.0, "region": 1.0, "products": 0.0, "amount": 0.0,
                                       "close_date": 0.0}, reasons=["same customer"], overlapping=True)


def _verdict(score: float = 0.8, *, hit: bool = True, blind: bool = False) -> tuple[uuid.UUID, Verdict]:
    other = uuid.uuid4()
    return other, Verdict(SimpleNamespace(id=other), _match(score), blind, hit)


def _plan(verdicts, known=(), blind=(), dismissed=(), keep=20):
    return plan(dict(verdicts), set(known), set(blind) | {i for i, v in verdicts if v.blind}, set(dismissed),
                keep=keep)


def test_a_new_look_alike_is_written_on_both_sides_and_announced():
    other, verdict = _verdict(0.8)
    todo = _plan([(other, verdict)])
    assert todo.written == {other: verdict.match}
    assert todo.new == [(verdict.row, verdict.match)] and todo.current == {other}
    assert todo.cleared == set() and todo.beyond_cut == 0


def test_an_open_pair_that_no_longer_looks_alike_is_cleared():
    other, verdict = _verdict(0.3, hit=False)
    todo = _plan([(other, verdict)], known={other})
    assert todo.cleared == {other} and todo.written == {} and todo.new == [] and todo.current == set()


def test_a_known_open_pair_is_rewritten_with_its_current_explanation_and_not_announced_again():
    other, verdict = _verdict(0.9)
    todo = _plan([(other, verdict)], known={other})
    assert todo.written == {other: verdict.match} and todo.new == [] and todo.current == {other}


def test_a_blind_pair_outlives_the_deals_ceasing_to_look_alike():
    """Neither owner's edits clear it: a clearing would answer a question about a deal they may not see."""
    other, verdict = _verdict(0.2, hit=False, blind=True)
    todo = _plan([(other, verdict)], known={other})
    assert todo.cleared == set() and todo.written == {} and todo.current == {other}


def test_a_known_blind_pair_is_never_rewritten():
    """Its row (score, signals) changing with the other owner's edits would be a signal too."""
    other, verdict = _verdict(0.95, blind=True)
    todo = _plan([(other, verdict)], known={other})
    assert todo.written == {} and todo.new == [] and todo.current == {other}


def test_a_recorded_blind_pair_that_is_no_longer_a_candidate_stays():
    other = uuid.uuid4()  # its deal changed beyond sharing a match key: no verdict at all
    todo = _plan([], known={other}, blind={other})
    assert todo.cleared == set() and todo.current == {other}


def test_a_dismissed_pair_is_never_recorded_again_and_is_cleared_if_open():
    other, verdict = _verdict(0.99)
    assert _plan([(other, verdict)], dismissed={other}).written == {}
    assert _plan([(other, verdict)], known={other}, dismissed={other}).cleared == {other}


def test_one_write_keeps_the_best_open_pairs_by_score():
    open_pairs = [_verdict(score) for score in (0.6, 0.9, 0.7)]
    todo = _plan(open_pairs, keep=2)
    kept = {other for other, v in open_pairs if v.match.score in (0.9, 0.7)}
    assert set(todo.written) == kept and {row.id for row, _ in todo.new} == kept
    assert todo.beyond_cut == 1 and todo.current == kept  # the one cut is not among the current pairs


def _blind(other: str, score: float) -> tuple[uuid.UUID, Verdict]:
    other_id = uuid.UUID(other)
    return other_id, Verdict(SimpleNamespace(id=other_id), _match(score), True, True)


def test_blind_pairs_come_after_open_ones_and_by_id_alone():
    """Which blind pair makes the cut must not rank the hidden deal's score: the best-scoring one here
    has the larger id, and loses its place to the smaller id."""
    open_pairs = [_verdict(0.6), _verdict(0.7)]
    low_id = _blind("00000000-0000-4000-8000-000000000001", 0.56)
    high_id = _blind("ffffffff-0000-4000-8000-000000000001", 0.99)
    todo = _plan([*open_pairs, high_id, low_id], keep=3)
    assert set(todo.written) == {other for other, _ in open_pairs} | {low_id[0]}
    assert todo.beyond_cut == 1 and high_id[0] not in todo.current
    todo = _plan([*open_pairs, high_id, low_id], keep=2)  # the open pairs first, whatever the scores
    assert set(todo.written) == {other for other, _ in open_pairs} and todo.beyond_cut == 2


def test_known_pairs_do_not_count_against_the_cut():
    known = [_verdict(0.9) for _ in range(3)]
    fresh = _verdict(0.6)
    todo = _plan([*known, fresh], known={other for other, _ in known}, keep=1)
    assert set(todo.written) == {other for other, _ in [*known, fresh]} and todo.beyond_cut == 0
    assert todo.new == [(fresh[1].row, fresh[1].match)]
