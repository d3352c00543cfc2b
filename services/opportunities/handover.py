"""crm.directory.v1 in the opportunities service (docs/handover.md): the kit's handover saga
(crmkit.handover), with how this service moves a leaver's records: their open deals, their
accounts and the visits they still had planned."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.db import UnitOfWork, utcnow
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.handover import Handovers
from crmkit.settings import Settings

from . import SERVICE, detection
from .accounts import account_event
from .day_db import Visit
from .db import Account, CompletedHandover, DirectoryTeam, DirectoryUser, Opportunity
from .deals import opportunity_event
from .events import event
from .visits import visit_event


def directory_handlers(settings: Settings) -> dict:
    """This service's dispatch table for crm.directory.v1: the kit's handover saga, with how this
    service moves a leaver's records and where it answers."""
    return Handovers(
        SERVICE, DirectoryUser, DirectoryTeam, CompletedHandover,
        move=lambda uow, leaver, heir, team, actor, handover_id: _move_records(
            uow, settings, leaver, heir, team, actor, handover_id),
        answer=lambda uow, handover_id, data, actor: uow.publish(*event(
            settings, HANDOVER_COMPLETED, handover_id, data, actor=actor))).handlers()


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
    planned = uow.session.execute(select(Visit).where(
        Visit.owner_id == from_user, Visit.status == "planned").with_for_update()).scalars().all()
    for record in [*opps, *accounts, *planned]:
        record.owner_id, record.team_id, record.updated_at = to_user, to_team, now
    uow.session.flush()
    extra = {"changed": ["owner_id", "team_id"], "previous_owner_id": from_user, "reason": "handover",
             "handover_id": handover_id}
    for opp in opps:
        opportunity_event(uow, settings, "opportunity.updated", opp, actor, extra)
    detection.queue_recheck(uow, [opp.id for opp in opps], actor)
    for account in accounts:
        account_event(uow, settings, "account.updated", account, actor, extra)
    for visit in planned:  # the successor's agenda now (the notifications service moves the reminder)
        visit_event(uow, settings, "visit.planned", visit, actor)
    return {"moved": len(opps) + len(accounts) + len(planned), "opportunities": len(opps), "accounts": len(accounts),
            "visits": len(planned)}
