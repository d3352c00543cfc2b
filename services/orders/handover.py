"""crm.directory.v1 in the orders service (docs/handover.md): the kit's replica upkeep and handover
saga. Orders are not built yet, so a handover moves nothing here and answers at once; the saga's
bookkeeping (remembering the handover for what arrives later) is in place for them."""
from __future__ import annotations

from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.handover import Handovers
from crmkit.settings import Settings

from . import SERVICE
from .db import CompletedHandover, DirectoryTeam, DirectoryUser
from .events import event


def directory_handlers(settings: Settings) -> dict:
    """This service's dispatch table for crm.directory.v1."""
    return Handovers(
        SERVICE, DirectoryUser, DirectoryTeam, CompletedHandover,
        move=lambda uow, leaver, heir, team, actor, handover_id: {"moved": 0},
        answer=lambda uow, handover_id, data, actor: uow.publish(*event(
            settings, HANDOVER_COMPLETED, handover_id, data, actor=actor))).handlers()
