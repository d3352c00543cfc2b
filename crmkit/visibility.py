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


def visible(principal: Principal, rule: VisibilityRule) -> ColumnElement:
    role = principal.role
    if role in SEES_EVERYTHING or role in rule.also_sees_all:
        return true()
    conditions: list[ColumnElement] = []
    member = rule.member_condition(principal.user_id) if rule.member_condition else None
    if role in ("rep", "manager"):
        conditions.append(rule.owner_column == principal.user_id)
    if role == "manager":
        if principal.manages:
            conditions.append(rule.team_column.in_(principal.manages))
        if rule.managers_see_unowned:
            # The shared queue: unowned and not yet routed to a team (routed ones are covered above).
            conditions.append(and_(rule.owner_column.is_(None), rule.team_column.is_(None)))
    if role in ("rep", "manager", "service") and member is not None:
        conditions.append(member)
    return or_(*conditions) if conditions else false()
