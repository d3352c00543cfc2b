"""Collision detection against the database: find candidates by shared match keys (an index
lookup, never a scan of every open opportunity), score them (collisions.py), mark both sides and
announce new collisions with both owners and their managers."""
from __future__ import annotations

import uuid

from sqlalchemy import delete, func, or_, select

from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.settings import Settings

from . import collisions
from .db import Account, Collision, DirectoryTeam, DirectoryUser, MatchKey, Opportunity
from .events import event

# How many of the best candidates (by shared match keys) are scored per write.
CANDIDATES = 100


def deal_of(opportunity: Opportunity, account_name: str) -> collisions.Deal:
    return collisions.Deal.of(account_name, opportunity.region, opportunity.products, opportunity.amount,
                              opportunity.expected_close_date)


def forget(uow: UnitOfWork, opportunity_id: uuid.UUID) -> None:
    """A closed or deleted opportunity is no longer a candidate (its recorded collisions stay)."""
    uow.session.execute(delete(MatchKey).where(MatchKey.opportunity_id == opportunity_id))


def detect(uow: UnitOfWork, settings: Settings, opportunity: Opportunity, account_name: str, actor) -> list[Collision]:
    """(Re)index one open opportunity and (re)compute its collisions; returns those newly found."""
    session = uow.session
    deal = deal_of(opportunity, account_name)
    forget(uow, opportunity.id)
    if opportunity.status != "open" or opportunity.deleted_at is not None:
        return []
    stored, probed = collisions.stored_keys(deal), collisions.probe_keys(deal)
    # Two reps saving the same deal at the same moment would each miss the other's uncommitted keys:
    # the keys are locked until commit, so the second one waits and then finds the first.
    lock_keys(uow, [f"collision:{k}" for k in stored | probed])
    session.add_all([MatchKey(key=k, opportunity_id=opportunity.id) for k in sorted(stored)])
    matches = {}
    for other, other_account in _candidates(uow, opportunity, sorted(probed)):
        match = collisions.compare(deal, deal_of(other, other_account))
        if match.is_collision:
            matches[other.id] = (other, match)
    before = {c.other_id: c for c in session.execute(
        select(Collision).where(Collision.opportunity_id == opportunity.id)).scalars()}
    # The pairs that no longer look alike are cleared on both sides; the others are (re)written.
    gone = [other_id for other_id in before if other_id not in matches]
    if gone:
        session.execute(delete(Collision).where(or_(
            (Collision.opportunity_id == opportunity.id) & Collision.other_id.in_(gone),
            (Collision.other_id == opportunity.id) & Collision.opportunity_id.in_(gone))))
    found = []
    now = utcnow()
    for other_id, (other, match) in matches.items():
        for this, that in ((opportunity.id, other_id), (other_id, opportunity.id)):
            row = session.get(Collision, (this, that)) or Collision(opportunity_id=this, other_id=that)
            row.score, row.signals, row.reasons, row.detected_at = match.score, match.signals, match.reasons, now
            session.add(row)
        if other_id not in before:
            found.append(session.get(Collision, (opportunity.id, other_id)))
            _announce(uow, settings, opportunity, other, match, actor)
    return found


def _candidates(uow: UnitOfWork, opportunity: Opportunity, keys: list[str]) -> list[tuple[Opportunity, str]]:
    if not keys:
        return []
    # Only other owners' open deals compete for the CANDIDATES places: a rep with a hundred deals on
    # one customer must not crowd out the one deal of another rep.
    shared = func.count().label("shared")
    best = (select(MatchKey.opportunity_id)
            .join(Opportunity, Opportunity.id == MatchKey.opportunity_id)
            .where(MatchKey.key.in_(keys), Opportunity.status == "open", Opportunity.deleted_at.is_(None),
                   Opportunity.owner_id.is_not(None), Opportunity.owner_id != opportunity.owner_id)
            .group_by(MatchKey.opportunity_id).order_by(shared.desc(), MatchKey.opportunity_id).limit(CANDIDATES))
    ids = list(uow.session.execute(best).scalars())
    if not ids:
        return []
    rows = uow.session.execute(select(Opportunity, Account.name).join(Account, Account.id == Opportunity.account_id)
                               .where(Opportunity.id.in_(ids))).all()
    return [(row[0], row[1]) for row in rows]


def _manager_of(uow: UnitOfWork, user_id: str | None) -> str | None:
    user = uow.session.get(DirectoryUser, user_id) if user_id else None
    team = uow.session.get(DirectoryTeam, user.team_id) if user and user.team_id else None
    return team.manager_id if team else None


def _announce(uow: UnitOfWork, settings: Settings, opportunity: Opportunity, other: Opportunity,
              match: collisions.Match, actor) -> None:
    sides = []
    for opp in (opportunity, other):
        sides.append({"opportunity_id": str(opp.id), "name": opp.name, "owner_id": opp.owner_id,
                      "team_id": opp.team_id, "manager_id": _manager_of(uow, opp.owner_id)})
    uow.publish(*event(settings, "opportunity.collision_detected", opportunity.id, {
        "opportunities": sides, "score": match.score, "signals": match.signals, "reasons": match.reasons,
        "owner_ids": sorted({s["owner_id"] for s in sides if s["owner_id"]}),
        "manager_ids": sorted({s["manager_id"] for s in sides if s["manager_id"]}),
    }, actor=actor))
