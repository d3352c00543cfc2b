"""Row visibility as a SQL condition (CONTRACT §2), so no route can forget it.

A repository is built with the caller's Principal and puts `visible(...)` into every query it
runs; by-id lookups of invisible rows therefore come back empty and the API answers 404.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, false, or_, true
from sqlalchemy.sql import ColumnElement

from .auth import Principal

SEES_EVERYTHING = frozenset({"executive", "admin"})


@dataclass(frozen=True)
class VisibilityRule:
    owner_column: ColumnElement
    team_column: ColumnElement
    # A condition "user is on this record's virtual team", for records that have one.
    member_condition: Callable[[str], ColumnElement] | None = None
    # Extra roles that see every row of this resource (marketing sees all leads).
    also_sees_all: frozenset[str] = frozenset()
    # Unowned rows (e.g. the unassigned lead queue) are visible to managers.
    managers_see_unowned: bool = False


def _conditions(principal: Principal, rule: VisibilityRule, *, team_by_team: bool) -> list[ColumnElement] | None:
    """The ways the caller sees rows (None: every row): their own, the teams they manage (one IN, or
    one condition a team), the unassigned queue, their virtual teams."""
    role = principal.role
    if role in SEES_EVERYTHING or role in rule.also_sees_all:
        return None
    conditions: list[ColumnElement] = []
    member = rule.member_condition(principal.user_id) if rule.member_condition else None
    if role in ("rep", "manager"):
        conditions.append(rule.owner_column == principal.user_id)
    if role == "manager":
        if principal.manages:
            teams = sorted(set(principal.manages))
            conditions += [rule.team_column == t for t in teams] if team_by_team else [rule.team_column.in_(teams)]
        if rule.managers_see_unowned:
            # The shared queue: unowned and not yet routed to a team (routed ones are covered above).
            conditions.append(and_(rule.owner_column.is_(None), rule.team_column.is_(None)))
    if role in ("rep", "manager", "service") and member is not None:
        conditions.append(member)
    return conditions


def visible(principal: Principal, rule: VisibilityRule) -> ColumnElement:
    conditions = _conditions(principal, rule, team_by_team=False)
    if conditions is None:
        return true()
    return or_(*conditions) if conditions else false()


def branches(principal: Principal, rule: VisibilityRule) -> list[ColumnElement] | None:
    """`visible` as separate conditions, one per index a list can walk (None: every row). A list
    pages each branch down its own index and merges them (crmkit.pagination.paginate_branches), where
    one OR made the database walk the whole table in the list's order and filter: a manager of 0.1%
    of a million leads read about 50,000 rows a page."""
    return _conditions(principal, rule, team_by_team=True)
