"""Collision detection against the database: find candidates by shared match keys (an index
lookup, never a scan of every open opportunity), score them (collisions.py), mark both sides and
announce new collisions with both owners and their managers."""
from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.settings import Settings

from . import collisions
from .db import Account, Collision, DirectoryTeam, DirectoryUser, MatchKey, Opportunity
from .events import event

# How many of the best candidates (by shared match keys) are scored per write.
CANDIDATES = 100


def deal_of(opportunity, account_name: str) -> collisions.Deal:
    return collisions.Deal.of(account_name, opportunity.region, opportunity.products, opportunity.amount,
                              opportunity.expected_close_date)


def forget(uow: UnitOfWork, opportunity_id: uuid.UUID) -> None:
    """A closed or deleted opportunity is no longer a candidate (its recorded collisions stay)."""
    uow.session.execute(delete(MatchKey).where(MatchKey.opportunity_id == opportunity_id))


def detect(uow: UnitOfWork, settings: Settings, opportunity: Opportunity, account_name: str, actor) -> list[uuid.UUID]:
    """(Re)index one open opportunity and (re)compute its collisions; returns the deals newly found."""
    session = uow.session
    deal = deal_of(opportunity, account_name)
    forget(uow, opportunity.id)
    if opportunity.status != "open" or opportunity.deleted_at is not None:
        return []
    stored, probed = collisions.stored_keys(deal), collisions.probe_keys(deal)
    # Two reps saving the same deal at the same moment would each miss the other's uncommitted keys:
    # the keys are locked until commit, so the second one waits and then finds the first.
    lock_keys(uow, [f"collision:{k}" for k in stored | probed])
    session.add_all([MatchKey(key=k, opportunity_id=opportunity.id, owner_id=opportunity.owner_id)
                     for k in sorted(stored)])
    matches = {}
    for other in _candidates(uow, opportunity, sorted(probed)):
        match = collisions.compare(deal, deal_of(other, other.account_name))
        if match.is_collision:
            matches[other.id] = (other, match)
    mine = {c.other_id: c for c in session.execute(
        select(Collision).where(Collision.opportunity_id == opportunity.id)).scalars()}
    theirs = {c.opportunity_id: c for c in session.execute(
        select(Collision).where(Collision.other_id == opportunity.id)).scalars()}
    # The pairs that no longer look alike are cleared on both sides; the others are (re)written.
    for other_id in set(mine) | set(theirs):
        if other_id not in matches:
            for row in (mine.get(other_id), theirs.get(other_id)):
                if row is not None:
                    session.delete(row)
    now = utcnow()
    for other_id, (other, match) in matches.items():
        for this, that, known in ((opportunity.id, other_id, mine), (other_id, opportunity.id, theirs)):
            row = known.get(other_id) or Collision(opportunity_id=this, other_id=that)
            row.score, row.signals, row.reasons, row.detected_at = match.score, match.signals, match.reasons, now
            session.add(row)
        if other_id not in mine:
            _announce(uow, settings, opportunity, other, match, actor)
    return [other_id for other_id in matches if other_id not in mine]


def _candidates(uow: UnitOfWork, opportunity: Opportunity, keys: list[str]) -> list:
    """Other owners' open deals sharing the most keys with this one: only what scoring needs."""
    if not keys:
        return []
    # Only other owners' deals compete for the CANDIDATES places (a rep with a hundred deals on one
    # customer must not crowd out another rep's one), and only open deals have keys.
    shared = func.count().label("shared")
    best = (select(MatchKey.opportunity_id)
            .where(MatchKey.key.in_(keys), MatchKey.owner_id.is_not(None), MatchKey.owner_id != opportunity.owner_id)
            .group_by(MatchKey.opportunity_id).order_by(shared.desc(), MatchKey.opportunity_id).limit(CANDIDATES))
    with uow.session.no_autoflush:
        return uow.session.execute(
            select(Opportunity.id, Opportunity.name, Opportunity.owner_id, Opportunity.team_id, Opportunity.region,
                   Opportunity.products, Opportunity.amount, Opportunity.expected_close_date,
                   Account.name.label("account_name"))
            .join(Account, Account.id == Opportunity.account_id)
            .where(Opportunity.id.in_(best.scalar_subquery()), Opportunity.status == "open",
                   Opportunity.deleted_at.is_(None))).all()


def _manager_of(uow: UnitOfWork, user_id: str | None) -> str | None:
    key = ("manager_of", user_id)
    if key not in uow.cache:
        with uow.session.no_autoflush:
            user = uow.session.get(DirectoryUser, user_id) if user_id else None
            team = uow.session.get(DirectoryTeam, user.team_id) if user and user.team_id else None
        uow.cache[key] = team.manager_id if team else None
    return uow.cache[key]


def _announce(uow: UnitOfWork, settings: Settings, opportunity: Opportunity, other,
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
