"""crm.directory.v1 in the leads service (docs/handover.md): the kit's handover saga
(crmkit.handover), with how this service moves a leaver's records: their open leads."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.db import UnitOfWork, utcnow
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.handover import Handovers
from crmkit.settings import Settings

from . import SERVICE, domain
from .db import CompletedHandover, DirectoryTeam, DirectoryUser, Lead
from .events import leads_event
from .lifecycle import publish
from .routing import give


def directory_handlers(settings: Settings) -> dict:
    """This service's dispatch table for crm.directory.v1: the kit's handover saga, with how this
    service moves a leaver's records and where it answers."""
    return Handovers(
        SERVICE, DirectoryUser, DirectoryTeam, CompletedHandover,
        move=lambda uow, leaver, heir, team, actor, handover_id: _move_open_leads(
            uow, settings, leaver, heir, team, actor, handover_id),
        answer=lambda uow, handover_id, data, actor: uow.publish(*leads_event(
            settings, HANDOVER_COMPLETED, handover_id, data, actor=actor))).handlers()


def _move_open_leads(uow: UnitOfWork, settings: Settings, from_user: str, to_user: str, to_team: str | None, actor,
                     handover_id: str | None) -> dict:
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
    return {"moved": len(leads)}
