"""Targets (issue 16, CONTRACT §4): for a user or a team, for a month, quarter or year, on one metric,
optionally narrowed to a product line or a region; a quarter's or year's spread over its months by a
distribution (even when none is given). Managers set their teams' and their people's, executives
and admins everyone's; reps read their own. A target the caller may not see answers 404."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import or_, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.visibility import SEES_EVERYTHING

from . import scorecard
from .db import DirectoryTeam, DirectoryUser
from .performance_db import Target

SETTERS = frozenset({"manager", "executive", "admin"})


def target_visible(principal: Principal):
    """Reps see their own targets; managers those of their teams and of the people in them now (a
    rep who moved teams is their new manager's, not their old one's), and their own."""
    if principal.role in SEES_EVERYTHING:
        return Target.id.is_not(None)
    own = (Target.subject_type == "user") & (Target.subject_id == principal.user_id)
    if principal.role == "manager" and principal.manages:
        people = select(DirectoryUser.id).where(DirectoryUser.team_id.in_(principal.manages))
        return or_(own, (Target.subject_type == "team") & Target.subject_id.in_(principal.manages),
                   (Target.subject_type == "user") & Target.subject_id.in_(people))
    return own


NO_SUBJECT = "no such subject among your teams"


def _subject_team(uow: UnitOfWork, subject_type: str, subject_id: str) -> str | bool | None:
    """The team a target's subject is in now (the team itself for a team), or False for a subject
    the directory does not know (or a user no longer active)."""
    if subject_type == "team":
        return subject_id if uow.session.get(DirectoryTeam, subject_id) is not None else False
    user = uow.session.get(DirectoryUser, subject_id)
    return user.team_id if user is not None and user.active else False


def _may_set(principal: Principal, subject_type: str, subject_id: str, team_id: str | None) -> bool:
    if subject_type == "user" and subject_id == principal.user_id:
        return False  # nobody sets their own target
    if principal.role in SEES_EVERYTHING:
        return True
    return principal.role == "manager" and team_id in principal.manages


def _distribution(period: str, distribution: dict | None) -> dict | None:
    try:
        scorecard.check_distribution(period, distribution)
    except ValueError as exc:
        raise ValidationFailed(str(exc), errors={"distribution": [str(exc)]}) from None
    return None if not distribution else {m: format(v.normalize(), "f") for m, v in sorted(distribution.items())}


def create_target(uow: UnitOfWork, principal: Principal, fields: dict) -> Target:
    subject_type, subject_id = fields["subject_type"], fields["subject_id"]
    if principal.role not in SETTERS:
        raise Forbidden("only managers, executives and admins set targets")
    team_id = _subject_team(uow, subject_type, subject_id)
    if team_id is False or not _may_set(principal, subject_type, subject_id, team_id):
        # One answer for a subject outside the caller's teams, one that does not exist, and oneself:
        # a manager cannot learn from it who or which teams exist.
        raise ValidationFailed(NO_SUBJECT, errors={"subject_id": ["not one of your teams or their people"]})
    period = fields["period"].label
    scope = f"{fields.get('product_category') or ''}|{fields.get('region') or ''}"
    if uow.session.execute(select(Target.id).where(
            Target.subject_type == subject_type, Target.subject_id == subject_id, Target.period == period,
            Target.metric == fields["metric"], Target.scope == scope)).first():
        raise Conflict("this subject has a target for this metric and period; change it instead")
    now = utcnow()
    target = Target(id=uuid.uuid4(), subject_type=subject_type, subject_id=subject_id, team_id=team_id,
                    period=period, metric=fields["metric"], value=fields["value"],
                    product_category=fields.get("product_category"), region=fields.get("region"), scope=scope,
                    distribution=_distribution(period, fields.get("distribution")), created_by=principal.user_id,
                    created_at=now, updated_at=now, version=1)
    uow.session.add(target)
    uow.session.flush()
    return target


def visible_target(uow: UnitOfWork, principal: Principal, target_id: uuid.UUID, *, for_update=False) -> Target:
    stmt = select(Target).where(Target.id == target_id, target_visible(principal))
    target = uow.session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()
    if target is None:
        raise NotFound(f"target {target_id} not found")
    return target


def update_target(uow: UnitOfWork, principal: Principal, target_id: uuid.UUID, changes: dict, check_version) -> Target:
    target = visible_target(uow, principal, target_id, for_update=True)
    current_team = _subject_team(uow, target.subject_type, target.subject_id)
    if current_team is False or not _may_set(principal, target.subject_type, target.subject_id, current_team):
        raise Forbidden("you may read this target, not change it")
    check_version(target.version)
    if "value" in changes:
        target.value = changes["value"]
    if "distribution" in changes:
        target.distribution = _distribution(target.period, changes["distribution"])
    target.updated_at = utcnow()
    uow.session.flush()
    return target


def list_targets(uow: UnitOfWork, principal: Principal, args: dict):
    stmt = select(Target).where(target_visible(principal))
    for name in ("subject_type", "subject_id", "metric"):
        if args.get(name) is not None:
            stmt = stmt.where(getattr(Target, name) == args[name])
    if args.get("period") is not None:
        stmt = stmt.where(Target.period == args["period"].label)
    rows, cursor = paginate(uow.session, stmt, model=Target, sort=SortSpec("created_at", descending=False),
                            limit=args["limit"], cursor=args.get("cursor"))
    return with_members(uow, principal, rows), cursor


def with_members(uow: UnitOfWork, principal: Principal, targets: list[Target]) -> list[Target]:
    """A team's target beside the sum of its members' targets (same period, metric and narrowing)
    and the gap; only what the caller may see of the members is summed."""
    for t in targets:
        t.members_total = t.gap = None
        if t.subject_type != "team":
            continue
        members = select(DirectoryUser.id).where(DirectoryUser.team_id == t.subject_id)
        values = uow.session.execute(select(Target.value).where(
            Target.subject_type == "user", Target.subject_id.in_(members), Target.period == t.period,
            Target.metric == t.metric, Target.scope == t.scope, target_visible(principal))).scalars().all()
        t.members_total = sum(values, Decimal("0.00"))
        t.gap = t.value - t.members_total
    return targets
