"""crm.directory.v1 in the leads service: the directory replica, handovers of a leaver's open leads
(docs/handover.md), and the move of what a handed-over user gained before their deactivation."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.directory import (
    HANDOVER_COMPLETED,
    apply_directory_event,
    deactivated_user,
    directory_dispatch,
    handover_answer,
    handover_request,
    owner_lock_key,
    remember_handover,
)
from crmkit.settings import Settings

from . import SERVICE, domain
from .db import CompletedHandover, DirectoryTeam, DirectoryUser, Lead
from .events import leads_event
from .lifecycle import publish
from .people import directory_user, successor_now, team_of
from .routing import give


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
        # Handed over while still active, then deactivated: what they gained meanwhile (a lead of
        # their own, one routed or reassigned to them) goes to the successor now.
        successor = successor_now(uow, leaver)
        if successor != leaver:
            _move_open_leads(uow, settings, leaver, successor, envelope.get("actor"), None)


def hand_over(uow: UnitOfWork, settings: Settings, envelope: dict) -> int:
    """Move the leaver's open leads to the successor, and remember it (successor_now): what arrives
    later for the leaver goes to the successor too. A successor deactivated meanwhile gets nothing:
    the handover is answered as failed."""
    handover_id, from_user, to_user = handover_request(envelope)
    successor = directory_user(uow, to_user)
    if successor is None:
        # Not Reject: the user.created event may still be on its way (another key, another
        # partition). Retried, and dead-lettered with this reason if it never comes.
        raise LookupError(f"handover to user {to_user}, who is not in the directory (yet)")
    actor = envelope.get("actor")
    if not successor.active:
        uow.publish(*leads_event(settings, HANDOVER_COMPLETED, handover_id, handover_answer(
            handover_id, SERVICE, from_user, to_user, failure=f"the successor {to_user} is not active"), actor=actor))
        return 0
    lock_keys(uow, [owner_lock_key(from_user)])  # records being given to the leaver commit first, or wait
    moved = _move_open_leads(uow, settings, from_user, to_user, actor, handover_id)
    remember_handover(uow.session, CompletedHandover, handover_id, from_user, to_user)
    uow.publish(*leads_event(settings, HANDOVER_COMPLETED, handover_id, handover_answer(
        handover_id, SERVICE, from_user, to_user, moved=moved), actor=actor))
    return moved


def _move_open_leads(uow: UnitOfWork, settings: Settings, from_user: str, to_user: str, actor,
                     handover_id: str | None) -> int:
    to_team = team_of(uow, to_user)
    leads = uow.session.execute(select(Lead).where(
        Lead.owner_id == from_user, Lead.status.in_(domain.OPEN_STATUSES), Lead.deleted_at.is_(None)
    ).with_for_update()).scalars().all()
    for lead in leads:
        give(uow, lead, to_user, to_team, None)
        lead.updated_at = utcnow()
    uow.session.flush()
    for lead in leads:
        publish(uow, settings, "lead.assigned", lead, actor,
                 extra={"previous_owner_id": from_user, "reason": "handover", "handover_id": handover_id})
    return len(leads)
