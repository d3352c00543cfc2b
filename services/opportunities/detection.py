"""Collision detection against the database: find candidates by shared match keys (an index
lookup, never a scan of every open opportunity), score them (collisions.py), mark both sides and
announce new collisions with both owners and their managers.

A rep must not learn anything about a deal they may not see (CONTRACT §2) beyond "a collision
exists, with this owner". If a rep's own edits could also *clear* a collision with a hidden deal,
every edit would answer a yes/no question about it, and a sequence of edits would recover its
amount, date, products and customer name bit by bit. So a collision between deals whose owners
cannot see each other's deal is sticky: neither owner's edits clear it; it ends when either deal
closes or is deleted, or when someone who sees both dismisses it (`dismiss`). Pairs whose owners do
see each other's deals are cleared as soon as they stop looking alike."""
from __future__ import annotations

import logging
import os
import time
import uuid

from sqlalchemy import delete, func, or_, select

from crmkit.db import UnitOfWork, lock_keys, upsert, utcnow
from crmkit.settings import Settings

from . import collisions, pairs, people
from .db import (
    Account,
    Collision,
    CollisionDismissal,
    CollisionRecheck,
    MatchKey,
    Opportunity,
    OpportunityRepository,
)
from .events import event

log = logging.getLogger(__name__)

# How many of the best candidates (by shared match keys) are scored per write, and how many new
# collisions one write records at most.
CANDIDATES = 100
NEW_MATCHES_KEPT = 20


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
    keys = sorted(probed)
    # Scoring the candidates and telling blind pairs from open ones is most of a detection's work.
    # It is done first, on what is committed, before taking the match-key locks that every writer of
    # a look-alike deal waits for; under the locks the candidates are read again (an index lookup)
    # and only those that arrived or changed meanwhile are assessed.
    assessed = _assess(uow, opportunity, deal, _candidates(uow, opportunity, keys))
    # Two reps saving the same deal at the same moment would each miss the other's uncommitted keys:
    # the keys are locked until commit, so the second one waits and then finds the first.
    lock_keys(uow, [f"collision:{k}" for k in stored | probed])
    session.add_all([MatchKey(key=k, opportunity_id=opportunity.id, owner_id=opportunity.owner_id)
                     for k in sorted(stored)])
    if _locks_wait(uow):  # on SQLite this transaction has held the only write lock all along
        rows_now = _candidates(uow, opportunity, keys)
        assessed = {row.id: assessed[row.id] for row in rows_now
                    if row.id in assessed and assessed[row.id].row == row}
        assessed.update(_assess(uow, opportunity, deal, [row for row in rows_now if row.id not in assessed]))
    mine = {c.other_id: c for c in session.execute(
        select(Collision).where(Collision.opportunity_id == opportunity.id)).scalars()}
    theirs = {c.opportunity_id: c for c in session.execute(
        select(Collision).where(Collision.other_id == opportunity.id)).scalars()}
    known = set(mine) | set(theirs)
    blind = {i for i, verdict in assessed.items() if verdict.blind}
    blind |= _blind_pairs(uow, opportunity, known - set(assessed))
    # What to clear, write and announce (pairs.py, where the rules are, and their unit tests).
    # A burst of look-alike deals would pair each new one with every earlier one (up to CANDIDATES):
    # the best NEW_MATCHES_KEPT new pairs are recorded, which is plenty to resolve, and keeps the
    # write (and the match-key locks other look-alike writers wait for) short.
    todo = pairs.plan(assessed, known, blind, _dismissed_with(uow, opportunity.id), keep=NEW_MATCHES_KEPT)
    for other_id in todo.cleared:
        for row in (mine.get(other_id), theirs.get(other_id)):
            if row is not None:
                session.delete(row)
    now = utcnow()
    for other_id, match in todo.written.items():
        for this, that, rows in ((opportunity.id, other_id, mine), (other_id, opportunity.id, theirs)):
            row = rows.get(other_id) or Collision(opportunity_id=this, other_id=that, detected_at=now)
            row.score, row.signals, row.reasons = match.score, match.signals, match.reasons
            session.add(row)
    if todo.new:
        _announce(uow, settings, opportunity, todo.new, actor, more=todo.beyond_cut, current=todo.current)
    return [other.id for other, _ in todo.new]


# ---- re-detection after an account rename, in the worker -------------------------------------------
RECHECK_BATCH = 1  # one deal per transaction: its row and its keys, never another deal's meanwhile


def queue_recheck(uow: UnitOfWork, opportunity_ids: list[uuid.UUID], actor) -> None:
    """Ask the worker to run detection again for these deals. Detecting inline would hold the
    rename's write transaction (and the deals' locks) for as long as every deal on the account
    takes: seconds for a few hundred deals, while every other writer waits. An upsert: a deal the
    worker is checking right now (with the old name) is queued again, with a newer time."""
    if not opportunity_ids:
        return
    now = utcnow()
    rows = [{"opportunity_id": i, "actor": actor, "queued_at": now} for i in opportunity_ids]
    uow.session.execute(upsert(uow.session, CollisionRecheck).values(rows).on_conflict_do_update(
        index_elements=["opportunity_id"], set_={"queued_at": now, "actor": actor}))


def run_rechecks(uow: UnitOfWork, settings: Settings, limit: int = RECHECK_BATCH) -> int:
    """One small batch of queued re-detections, in the caller's transaction; returns how many ran.
    Rows are claimed with SKIP LOCKED on PostgreSQL, so several workers share the queue; a row
    queued again meanwhile (its time changed) stays for the next round."""
    stmt = select(CollisionRecheck).order_by(CollisionRecheck.queued_at).limit(limit)
    if uow.session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    batch = uow.session.execute(stmt).scalars().all()
    for queued in batch:
        seen = queued.queued_at
        opportunity = uow.session.get(Opportunity, queued.opportunity_id, with_for_update=True)
        if opportunity is not None:
            name = uow.session.execute(select(Account.name).where(Account.id == opportunity.account_id)).scalar_one()
            detect(uow, settings, opportunity, name, queued.actor)
        uow.session.execute(delete(CollisionRecheck).where(CollisionRecheck.opportunity_id == queued.opportunity_id,
                                                           CollisionRecheck.queued_at == seen))
        uow.session.expunge(queued)
    return len(batch)


# Between two batches: on SQLite a writer waiting for the database lock polls for it, and a loop
# that starts its next transaction at once would win every time.
BATCH_PAUSE_SECONDS = 0.01


def drain_rechecks(db, settings: Settings, stop=None) -> int:
    """Run queued re-detections a batch per transaction until the queue is empty; returns how many."""
    total = 0
    while stop is None or not stop.is_set():
        with db.uow() as uow:
            done = run_rechecks(uow, settings)
            uow.commit()
        total += done
        if done < RECHECK_BATCH:
            break
        time.sleep(BATCH_PAUSE_SECONDS)
    return total


def recheck_loop(db, settings: Settings, stop) -> None:
    """The worker's loop over queued re-detections: drain the queue, then a short sleep
    (OPPORTUNITIES_RECHECK_INTERVAL_SECONDS, 0.5 by default)."""
    interval = float(os.environ.get("OPPORTUNITIES_RECHECK_INTERVAL_SECONDS", "0.5"))
    while not stop.wait(interval):
        try:
            drain_rechecks(db, settings, stop)
        except Exception:  # a schedule must outlive one bad run; it logs and tries again
            log.exception("collision re-detection failed")


def _assess(uow: UnitOfWork, opportunity: Opportunity, deal: collisions.Deal, rows: list) -> dict:
    """Each candidate row's verdict, by id. A blind pair (module docstring) collides by
    collisions.blind_collision, an open one by its score."""
    blind = _blind_pairs(uow, opportunity, {row.id for row in rows})
    verdicts = {}
    for row in rows:
        other = deal_of(row, row.account_name)
        match = collisions.compare(deal, other)
        hit = collisions.blind_collision(deal, other) if row.id in blind else match.is_collision
        verdicts[row.id] = pairs.Verdict(row, match, row.id in blind, hit)
    return verdicts


def _locks_wait(uow: UnitOfWork) -> bool:
    """Whether lock_keys may have waited for other writers (see crmkit.db.lock_keys)."""
    return uow.session.get_bind().dialect.name == "postgresql"


def _dismissed_with(uow: UnitOfWork, opportunity_id: uuid.UUID) -> set[uuid.UUID]:
    rows = uow.session.execute(select(CollisionDismissal.opportunity_id, CollisionDismissal.other_id).where(
        or_(CollisionDismissal.opportunity_id == opportunity_id, CollisionDismissal.other_id == opportunity_id)))
    return {b if a == opportunity_id else a for a, b in rows}


def _blind_pairs(uow: UnitOfWork, opportunity: Opportunity, other_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Those of other_ids whose owner may not see this deal, or whose deal this deal's owner may not
    see. The same queries whatever the pairs' state, so its cost says nothing about them."""
    if not other_ids:
        return set()
    with uow.session.no_autoflush:
        owners = dict(uow.session.execute(select(Opportunity.id, Opportunity.owner_id).where(
            Opportunity.id.in_(other_ids))).all())
        mine_sees = OpportunityRepository(uow.session, people.principal_of(uow, opportunity.owner_id)).visible_ids(
            list(owners)) if opportunity.owner_id else set()
        seen_by = {}
        for owner in sorted({o for o in owners.values() if o}):
            seen_by[owner] = opportunity.id in OpportunityRepository(
                uow.session, people.principal_of(uow, owner)).visible_ids([opportunity.id])
    return {other_id for other_id in other_ids
            if other_id not in mine_sees or not seen_by.get(owners.get(other_id), False)}


def dismiss(uow: UnitOfWork, opportunity_id: uuid.UUID, other_id: uuid.UUID, by: str, reason: str | None) -> bool:
    """Someone who sees both deals decided they are different deals: clear the pair and remember it.
    Returns whether there was a collision to dismiss."""
    rows = uow.session.execute(select(Collision).where(or_(
        (Collision.opportunity_id == opportunity_id) & (Collision.other_id == other_id),
        (Collision.opportunity_id == other_id) & (Collision.other_id == opportunity_id)))).scalars().all()
    for row in rows:
        uow.session.delete(row)
    first, second = sorted((opportunity_id, other_id), key=str)
    if uow.session.get(CollisionDismissal, (first, second)) is None:
        uow.session.add(CollisionDismissal(opportunity_id=first, other_id=second, dismissed_by=by, reason=reason,
                                           dismissed_at=utcnow()))
    return bool(rows)


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


ANNOUNCED_MATCHES = 20  # an announcement names at most this many of a deal's new collisions


def _announce(uow: UnitOfWork, settings: Settings, opportunity: Opportunity, new: list, actor, *,
              more: int = 0, current: set | None = None) -> None:
    """One opportunity.collision_detected per write that found new collisions, naming this deal and
    its new matches (the best first, at most ANNOUNCED_MATCHES): a burst of look-alike deals makes
    one event per deal, not one per pair."""
    def side(opp) -> dict:
        return {"opportunity_id": str(opp.id), "name": opp.name, "owner_id": opp.owner_id, "team_id": opp.team_id,
                "manager_id": people.manager_of(uow, opp.owner_id)}

    best = sorted(new, key=lambda pair: (-pair[1].score, str(pair[0].id)))[:ANNOUNCED_MATCHES]
    people.remember_managers(uow, {opportunity.owner_id, *(other.owner_id for other, _ in best)})
    this = side(opportunity)
    matches = [{**side(other), "score": match.score, "signals": match.signals, "reasons": match.reasons}
               for other, match in best]
    everyone = [this, *matches]
    uow.publish(*event(settings, "opportunity.collision_detected", opportunity.id, {
        "opportunity": this, "matches": matches, "more": more + len(new) - len(best),
        # Every deal it collides with now (new or not), by id, at most ANNOUNCED_MATCHES of them.
        "current_ids": sorted(str(i) for i in current or ())[:ANNOUNCED_MATCHES],
        "opportunities": [this, *({k: m[k] for k in this} for m in matches)],
        "owner_ids": sorted({s["owner_id"] for s in everyone if s["owner_id"]}),
        "manager_ids": sorted({s["manager_id"] for s in everyone if s["manager_id"]}),
    }, actor=actor))
