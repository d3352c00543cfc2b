"""Pure gateway rules: the route policy, who manages what, who may hand over to whom, the breaker,
and reporting periods."""
from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest

from crmkit.auth import Principal
from crmkit.periods import parse_period
from crmkit.problems import Problem
from crmkit.teams import TeamNode, descendants, managed_teams
from gateway import domain
from gateway.policy import PolicyError, RoutePolicy
from gateway.upstream import CircuitBreaker


@pytest.fixture(scope="module")
def policy() -> RoutePolicy:
    return RoutePolicy.load()


def test_literal_paths_win_over_patterns(policy):
    assert policy.decide("POST", "/api/v1/leads/import", "rep").path == "/api/v1/leads/import"
    assert policy.decide("GET", "/api/v1/leads/abc", "rep").path == "/api/v1/leads/{id}"
    assert policy.decide("POST", "/api/v1/notifications/read-all", "rep").path == "/api/v1/notifications/read-all"


@pytest.mark.parametrize(("method", "path", "role", "status"), [
    ("GET", "/api/v1/nothing", "admin", 404),
    ("GET", "/api/v1/leads/a/b/c", "admin", 404),
    ("DELETE", "/api/v1/leads", "admin", 405),
    ("GET", "/api/v1/leads", "service", 403),
    ("GET", "/api/v1/users", "manager", 403),
    ("PUT", "/api/v1/lead-assignment-rules", "marketing", 403),
])
def test_refusals(policy, method, path, role, status):
    with pytest.raises(Problem) as refused:
        policy.decide(method, path, role)
    assert refused.value.status == status


def test_head_is_checked_as_get_and_public_routes_need_no_role(policy):
    assert policy.decide("HEAD", "/api/v1/leads", "rep").service == "leads"
    assert policy.decide("POST", "/api/v1/auth/token", None).public


def test_a_malformed_policy_refuses_to_load(tmp_path):
    for text in ('[[route]]\npath = "/x"\nservice = "s"\nGET = ["boss"]\n',
                 '[[route]]\npath = "/x"\nservice = "s"\nGET = ["@nobody"]\n',
                 '[[route]]\npath = "/x"\nservice = "s"\nGETT = ["rep"]\n',
                 '[[route]]\npath = "/x"\nservice = "s"\n[[route]]\npath = "/x"\nservice = "s"\n'):
        f = tmp_path / "p.toml"
        f.write_text(text)
        with pytest.raises(PolicyError):
            RoutePolicy.load(f)


def _team(parent=None, manager=None):
    return TeamNode(uuid.uuid4(), manager, parent)


def test_manages_includes_every_level_below_and_survives_a_cycle():
    boss = uuid.uuid4()
    top = _team(manager=boss)
    mid = _team(parent=top.id)
    low = _team(parent=mid.id)
    other = _team()
    assert managed_teams(boss, [top, mid, low, other]) == {top.id, mid.id, low.id}
    assert domain.would_cycle(top.id, low.id, [top, mid, low]) is True
    assert domain.would_cycle(low.id, other.id, [top, mid, low, other]) is False
    a, b = uuid.uuid4(), uuid.uuid4()
    looped = [TeamNode(a, boss, b), TeamNode(b, None, a)]
    assert descendants([a], looped) == {a, b}


def test_handover_rules():
    team, elsewhere = uuid.uuid4(), uuid.uuid4()
    manager = Principal("m", "manager", manages=(str(team),))
    assert domain.may_hand_over(manager, team) and not domain.may_hand_over(manager, elsewhere)
    assert not domain.may_hand_over(Principal("r", "rep", teams=(str(team),)), team)
    assert domain.may_hand_over(Principal("e", "executive"), None)
    assert domain.may_receive_handover(manager, "rep", team)
    assert not domain.may_receive_handover(manager, "rep", elsewhere)
    assert not domain.may_receive_handover(Principal("a", "admin"), "marketing", team)


def test_stale_claims():
    assert domain.stale_claims({"role": "manager"}) and domain.stale_claims({"active": False})
    assert not domain.stale_claims({"name": "x"}) and not domain.stale_claims({"active": True})


def test_breaker_opens_after_failures_and_lets_one_trial_through():
    breaker = CircuitBreaker(fail_max=3, reset_seconds=0.2)
    in_flight = breaker.allow()     # a call that started before the trouble
    for _ in range(3):
        breaker.failed(breaker.allow())
    assert breaker.allow() is None and breaker.state == "open" and breaker.retry_after() == 1
    time.sleep(0.25)
    trial = breaker.allow()
    assert trial == "trial" and breaker.allow() is None  # everyone else waits for the trial
    breaker.succeeded(in_flight)    # an old call finishing does not decide for the trial
    breaker.inconclusive(in_flight)
    assert breaker.state == "half-open" and breaker.allow() is None
    breaker.failed(trial)           # the trial failed: open again
    assert breaker.allow() is None
    time.sleep(0.25)
    trial = breaker.allow()
    breaker.inconclusive(trial)     # a trial that proved nothing lets another try
    trial = breaker.allow()
    assert trial == "trial"
    breaker.succeeded(trial)
    assert breaker.state == "closed" and breaker.allow() == "normal"


def test_periods():
    q4 = parse_period("2026-Q4")
    assert (q4.start, q4.end) == (dt.datetime(2026, 10, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert parse_period("2026-12").end == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert parse_period("2026").start == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for bad in ("2026-13", "2026-Q5", "26", "2026-11\n", "٢٠٢٦", "", "3000"):
        with pytest.raises(ValueError):
            parse_period(bad)


def test_a_service_refuses_tokens_its_directory_replica_contradicts():
    from crmkit.auth import Unauthorized
    from crmkit.directory import DirectoryGuard, KnownUser

    replica = {"ann": KnownUser("rep", True, "east", 3), "old-admin": KnownUser("rep", True, "east", 1),
               "gone": KnownUser("rep", False, "east", 1), "mia": KnownUser("manager", True, "east", 2, ("east",))}
    loads = []
    guard = DirectoryGuard(lambda: loads.append(1) or dict(replica), refresh_seconds=0.1, catch_up_seconds=0.3)
    assert guard.check(Principal("ann", "rep", teams=("east",), token_version=3)).teams == ("east",)
    east = ("east",)
    refused = [Principal("gone", "rep", teams=east, token_version=1),
               Principal("old-admin", "admin", teams=east, token_version=1),
               Principal("ann", "rep", teams=east, token_version=2),  # revoked: a password reset bumped the version
               Principal("ann", "rep", teams=east, token_version=None)]
    for principal in refused:
        with pytest.raises(Unauthorized):
            guard.check(principal)
    assert len(loads) == 1  # one load serves every check until it is due again
    replica["ann"] = KnownUser("rep", False, "east", 3)
    time.sleep(0.15)
    with pytest.raises(Unauthorized):
        guard.check(Principal("ann", "rep", token_version=3))


def test_a_token_claiming_other_teams_than_the_replicas_is_refused():
    """Signed with the real key, current version, but claiming to manage or sit in a team the
    replica does not give them: refused (after a short wait for the replica, which may be behind)."""
    from crmkit.auth import Unauthorized
    from crmkit.directory import DirectoryGuard, KnownUser

    replica = {"mia": KnownUser("manager", True, "east", 2, ("east",)), "bo": KnownUser("rep", True, "west", 1)}
    guard = DirectoryGuard(lambda: dict(replica), refresh_seconds=10, catch_up_seconds=0.2)
    with pytest.raises(Unauthorized, match="claims are not the directory's"):
        guard.check(Principal("mia", "manager", teams=("east",), manages=("east", "west"), token_version=2))
    with pytest.raises(Unauthorized, match="claims are not the directory's"):
        guard.check(Principal("bo", "rep", teams=("east",), manages=("east",), token_version=1))
    honest = guard.check(Principal("mia", "manager", teams=("east",), manages=("east",), token_version=2))
    assert (honest.teams, honest.manages) == (("east",), ("east",))
    # A team change whose events reach the replica a moment after the new token is not refused.
    guard = DirectoryGuard(lambda: dict(replica), refresh_seconds=10, catch_up_seconds=2)
    threading.Timer(0.2, lambda: replica.update(mia=KnownUser("manager", True, "east", 2, ("east", "north")))).start()
    assert guard.check(Principal("mia", "manager", teams=("east",), manages=("east", "north"),
                                 token_version=2)).manages == ("east", "north")


def test_a_token_for_a_user_the_replica_never_learns_of_is_refused_after_a_short_wait():
    from crmkit.auth import Unauthorized
    from crmkit.directory import DirectoryGuard, KnownUser

    replica: dict = {}
    guard = DirectoryGuard(lambda: dict(replica), refresh_seconds=10, catch_up_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(Unauthorized, match="no user"):
        guard.check(Principal("ghost", "executive", token_version=1))
    assert time.monotonic() - started >= 0.3
    # A user created a moment ago: the replica learns of them while the request waits.
    guard = DirectoryGuard(lambda: dict(replica), refresh_seconds=10, catch_up_seconds=2)
    threading.Timer(0.2, lambda: replica.update(newbie=KnownUser("rep", True, "east", 1))).start()
    assert guard.check(Principal("newbie", "rep", teams=("east",), token_version=1)).teams == ("east",)


def test_tokens_the_replica_cannot_confirm_never_tie_up_more_than_two_threads():
    from crmkit.directory import DirectoryGuard
    from crmkit.problems import Problem

    loads = []
    guard = DirectoryGuard(lambda: loads.append(1) or {}, refresh_seconds=10, catch_up_seconds=0.5)
    outcomes, started = [], time.monotonic()

    def check():
        try:
            guard.check(Principal("ghost", "rep", token_version=1))
        except Problem as exc:
            outcomes.append((exc.status, round(time.monotonic() - started, 1)))

    threads = [threading.Thread(target=check) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy = [o for o in outcomes if o[0] == 503]
    assert len(busy) == 18 and all(seconds < 0.3 for _, seconds in busy)  # told to retry at once
    assert sorted(status for status, _ in outcomes if status != 503) == [401, 401]


def test_merged_documents_keep_each_service_s_pages_pointing_at_its_own_items():
    """Two services with an `Activity` of their own and an `ActivityPage` of the same text: the second
    service's page must be renamed too, or the first service's route would point at the second's
    items (a response schema its answers violate)."""
    from gateway.openapi import _clashes, _rename_refs

    def spec(item_props):
        return {"components": {"schemas": {
            "Activity": {"type": "object", "properties": item_props, "additionalProperties": False},
            "ActivityPage": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Activity"}}}}}}}

    merged = spec({"id": {"type": "string"}, "lead_id": {"type": "string"}})["components"]
    second = spec({"id": {"type": "string"}, "account_id": {"type": "string"}})
    renames = _clashes(merged, second, "opportunities")
    assert renames == {("schemas", "Activity"): "opportunities.Activity",
                       ("schemas", "ActivityPage"): "opportunities.ActivityPage"}
    renamed = _rename_refs(second, renames)
    assert renamed["components"]["schemas"]["ActivityPage"]["properties"]["items"]["items"]["$ref"] == \
        "#/components/schemas/opportunities.Activity"


def test_a_user_reactivated_a_moment_ago_is_let_in_before_the_next_refresh():
    from crmkit.auth import Unauthorized
    from crmkit.directory import DirectoryGuard, KnownUser

    replica = {"ann": KnownUser("rep", False, "east", 1)}
    loads = []
    guard = DirectoryGuard(lambda: loads.append(1) or dict(replica), refresh_seconds=60, catch_up_seconds=0.2)
    with pytest.raises(Unauthorized, match="not active"):
        guard.check(Principal("ann", "rep", teams=("east",), token_version=1))
    replica["ann"] = KnownUser("rep", True, "east", 1)
    time.sleep(0.15)
    assert guard.check(Principal("ann", "rep", teams=("east",), token_version=1)).user_id == "ann"
    # A deactivated user's retries read the replica at most every 0.1 s, not once per request.
    replica["ann"] = KnownUser("rep", False, "east", 1)
    loads.clear()
    guard = DirectoryGuard(lambda: loads.append(1) or dict(replica), refresh_seconds=60, catch_up_seconds=0.2)
    before, started = len(loads), time.monotonic()
    refused = 0
    while time.monotonic() - started < 0.3:
        with pytest.raises(Unauthorized):
            guard.check(Principal("ann", "rep", teams=("east",), token_version=1))
        refused += 1
    assert refused > 20 and len(loads) - before <= 4
