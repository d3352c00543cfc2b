"""Lead rules: status changes, ownership of new leads, follow-up due dates."""
from __future__ import annotations

import datetime as dt

import pytest

from crmkit.auth import Principal
from crmkit.errors import Conflict, Forbidden
from services.leads import domain


@pytest.mark.parametrize(("current", "new"), [("new", "contacted"), ("contacted", "qualified"),
                                              ("qualified", "disqualified"), ("disqualified", "new"), ("new", "new")])
def test_allowed_status_changes(current, new):
    domain.check_status_change(current, new)


@pytest.mark.parametrize(("current", "new"), [("new", "converted"), ("converted", "new"), ("qualified", "new"),
                                              ("disqualified", "qualified")])
def test_refused_status_changes(current, new):
    with pytest.raises(Conflict):
        domain.check_status_change(current, new)


def test_ownership_of_new_leads():
    assert domain.initial_ownership(Principal("ann", "rep", teams=("east", "north"))) == ("ann", "east")
    assert domain.initial_ownership(Principal("mk", "marketing", teams=("mkt",))) == (None, None)


def test_follow_up_is_due_a_day_after_an_owner_gets_the_lead():
    now = dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC)
    assert domain.follow_up_due("ann", now) == now + dt.timedelta(hours=24)
    assert domain.follow_up_due(None, now) is None


def test_only_working_roles_modify_leads():
    domain.check_may_modify(Principal("ann", "rep"))
    for role in ("marketing", "service"):
        with pytest.raises(Forbidden):
            domain.check_may_modify(Principal("x", role))
