"""crm.directory.v1 in the opportunities service: the directory replica, handovers of a leaver's
open deals and accounts (docs/handover.md), and the move of what a handed-over user gained before
their deactivation."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.directory import (
    apply_directory_event,
    deactivated_user,
    directory_dispatch,
    handover_answer,
    handover_request,
    owner_lock_key,
    remember_handover,
)
from crmkit.settings import Settings

from . import SERVICE, detection, people
from .accounts import account_event
from .db import Account, CompletedHandover, DirectoryTeam, DirectoryUser, Opportunity
from .deals import opportunity_event
from .events import event


def directory_handlers(settings: Settings) -> dict:
    """This service's dispatch table for crm.directory.v1."""
    return directory_dispatch(lambda uow, e: apply_directory_change(uow, settings, e),
                              lambda uow, e: hand_over(uow, settings, e))


def apply_directory_change(uow: UnitOfWork, settings: Settings, envelope: dict) -> None:
    """user.* and team.* (crm.directory.v1): keep the replica current, and after a deactivation move
    what a handed-over leaver gained meanwhile."""
    apply_directory_event(uow, envelope, DirectoryUser, DirectoryTeam)
    leaver = deactivated_user(envelope)
    if leaver is not None:
        # Handed over while still active, then deactivated: what they gained meanwhile goes to the
        # successor now.
        successor = people.successor_now(uow, leaver)
        if successor != leaver and (heir := people.user(uow, successor)) is not None:
            _move_records(uow, settings, leaver, successor, heir.team_id, envelope.get("actor"), None)


def hand_over(uow: UnitOfWork, settings: Settings, envelope: dict) -> dict:
    """Move the leaver's open opportunities and their accounts to the successor (CONTRACT §2), and
    remember it: what arrives later for the leaver goes to the successor too. A successor
    deactivated meanwhile gets nothing: the handover is answered as failed."""
    handover_id, from_user, to_user = handover_request(envelope)
    successor = people.user(uow, to_user)
    if successor is None:
        # Not Reject: the user.created event may still be on its way (another key, another
        # partition). Retried, and dead-lettered with this reason if it never comes.
        raise LookupError(f"handover to user {to_user}, who is not in the directory (yet)")
    actor = envelope.get("actor")
    lock_keys(uow, [owner_lock_key(from_user)])  # records being given to the leaver commit first, or wait
    if not successor.active:
        uow.publish(*event(settings, "handover.completed", handover_id, handover_answer(
            handover_id, SERVICE, from_user, to_user, failure=f"the successor {to_user} is not active"), actor=actor))
        return {"moved": 0}
    moved = _move_records(uow, settings, from_user, to_user, successor.team_id, actor, handover_id)
    remember_handover(uow.session, CompletedHandover, handover_id, from_user, to_user)
    uow.publish(*event(settings, "handover.completed", handover_id, handover_answer(
        handover_id, SERVICE, from_user, to_user, **moved), actor=actor))
    return moved


def _move_records(uow: UnitOfWork, settings: Settings, from_user: str, to_user: str, to_team: str | None, actor,
                  handover_id: str | None) -> dict:
    """The leaver's open deals and their accounts, to the successor. Collision detection for the moved
    deals runs in the worker (queued): inline, it would lock each deal's match keys one deal after
    another, out of the order every other writer takes them in."""
    now = utcnow()
    opps = uow.session.execute(select(Opportunity).where(
        Opportunity.owner_id == from_user, Opportunity.status == "open", Opportunity.deleted_at.is_(None)
    ).with_for_update()).scalars().all()
    accounts = uow.session.execute(select(Account).where(
        Account.owner_id == from_user, Account.deleted_at.is_(None)).with_for_update()).scalars().all()
    for record in [*opps, *accounts]:
        record.owner_id, record.team_id, record.updated_at = to_user, to_team, now
    uow.session.flush()
    extra = {"changed": ["owner_id", "team_id"], "previous_owner_id": from_user, "reason": "handover",
             "handover_id": handover_id}
    for opp in opps:
        opportunity_event(uow, settings, "opportunity.updated", opp, actor, extra)
    detection.queue_recheck(uow, [opp.id for opp in opps], actor)
    for account in accounts:
        account_event(uow, settings, "account.updated", account, actor, extra)
    return {"moved": len(opps) + len(accounts), "opportunities": len(opps), "accounts": len(accounts)}
