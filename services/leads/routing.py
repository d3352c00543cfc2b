"""Who gets a lead: the assignment rules (round robin, least loaded, a named rep) and reassignment by a
leader. The rules themselves are pure (assignment.py); this is where they meet the database."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Forbidden, ValidationFailed
from crmkit.settings import Settings

from . import assignment, domain
from .batch import batch
from .db import (
    AssignmentCursor,
    Lead,
)
from .lifecycle import follow_up_sla, publish, visible_lead
from .people import active_reps, is_active, team_of
from .rules import ASSIGNMENT, rules


def _open_loads(uow: UnitOfWork, team_id: str) -> dict[str, int]:
    """Open leads per active rep of a team, read once per transaction and kept current in memory."""
    known = batch(uow).loads
    if team_id not in known:
        reps = active_reps(uow, team_id)
        loads = dict.fromkeys(reps, 0)
        if reps:
            uow.session.flush()
            rows = uow.session.execute(select(Lead.owner_id, func.count()).where(
                Lead.owner_id.in_(reps), Lead.status.in_(domain.OPEN_STATUSES), Lead.deleted_at.is_(None)
            ).group_by(Lead.owner_id)).all()
            loads.update(dict(rows))
        known[team_id] = loads
    return known[team_id]


def give(uow: UnitOfWork, lead: Lead, owner_id: str | None, team_id: str | None, rule: str | None) -> str | None:
    previous = lead.owner_id
    loads = batch(uow).loads  # kept current for the rest of the batch
    if previous and previous in loads.get(lead.team_id, {}):
        loads[lead.team_id][previous] -= 1
    lead.owner_id, lead.team_id, lead.assigned_by_rule = owner_id, team_id, rule
    lead.assigned_at = utcnow()
    if owner_id and owner_id in loads.get(team_id, {}):
        loads[team_id][owner_id] += 1
    if owner_id and lead.status in domain.OPEN_STATUSES:
        lead.follow_up_due_at = lead.assigned_at + follow_up_sla()
    return previous


def route(uow: UnitOfWork, lead: Lead) -> str | None:
    """Apply the assignment rules to an unowned lead; returns the rule that matched, if any."""
    facts = {"region": lead.region, "industry": lead.industry, "source": lead.source, "score": lead.score}
    candidates = {r["assign_to"]["user_id"] for r in rules(uow, ASSIGNMENT) if "user_id" in r["assign_to"]}
    active = {u for u in candidates if is_active(uow, u)}
    target = assignment.pick_rule(rules(uow, ASSIGNMENT), facts, active)
    if target.rule is None:
        return None
    if target.user_id:
        give(uow, lead, target.user_id, team_of(uow, target.user_id), target.rule)
        return target.rule
    owner = _pick_in_team(uow, target.team_id, target.strategy)
    give(uow, lead, owner, target.team_id, target.rule)  # no active rep: the team's own queue
    return target.rule


def _pick_in_team(uow: UnitOfWork, team_id: str, strategy: str) -> str | None:
    reps = active_reps(uow, team_id)
    if not reps:
        return None
    if strategy == "least_loaded":
        return assignment.least_loaded(_open_loads(uow, team_id))
    cursors = batch(uow).cursors
    if team_id not in cursors:
        # Locked once per transaction: a get() with FOR UPDATE goes to the database every time
        # (and flushes first), which made round robin cost half of a consumer batch.
        with uow.session.no_autoflush:
            cursor = uow.session.get(AssignmentCursor, team_id, with_for_update=True)
        if cursor is None:
            cursor = AssignmentCursor(team_id=team_id, last_user_id=None)
            uow.session.add(cursor)
        cursors[team_id] = cursor
    cursor = cursors[team_id]
    cursor.last_user_id = assignment.next_round_robin(reps, cursor.last_user_id)
    return cursor.last_user_id


def reassign(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, target: dict) -> Lead:
    lead = visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_reassign(principal)
    if "user_id" in target:
        if not is_active(uow, target["user_id"]):
            raise ValidationFailed("no active user with that id", errors={"user_id": ["unknown or inactive user"]})
        owner, team = target["user_id"], team_of(uow, target["user_id"])
    else:
        owner, team = None, target["team_id"]
    if principal.role == "manager" and team not in principal.manages:
        raise Forbidden("managers hand leads only to their own teams")
    previous = give(uow, lead, owner, team, None)
    lead.updated_at = utcnow()
    uow.session.flush()
    publish(uow, settings, "lead.assigned", lead, principal.user_id,
             extra={"previous_owner_id": previous, "reason": "reassigned"})
    return lead
