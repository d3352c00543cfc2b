"""Moving a deal through the pipeline: stage moves (checked against its checklist), ticking the
checklist, winning and losing."""
from __future__ import annotations

import uuid

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound
from crmkit.settings import Settings

from . import detection, domain
from .db import (
    Opportunity,
)
from .deals import opportunity_event, render_opportunities, writable_opportunity
from .stages import stages


def move_stage(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, target: str,
               check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    pipeline = stages(uow)
    domain.check_stage_move(pipeline, opp.status, opp.stage, target, opp.checklist_done or {})
    if target == opp.stage:
        return render_opportunities(uow, [opp])[0]
    now = utcnow()
    previous, entered = opp.stage, opp.stage_entered_at
    opp.stage, opp.probability = target, domain.stage_of(pipeline, target)["probability"]
    opp.stage_entered_at = opp.updated_at = now
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.stage_changed", opp, principal.user_id, {
        "from": previous, "to": target, "time_in_stage_seconds": int((now - entered).total_seconds()),
        "entered_previous_at": entered})
    return opp


def tick_checklist(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, key: str,
                   done: bool) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    domain.check_open(opp.status)
    stage = domain.stage_of(stages(uow), opp.stage) or {"checklist": []}
    if key not in {i["key"] for i in stage.get("checklist", [])}:
        raise NotFound(f"no checklist item {key!r} in stage {opp.stage!r}")
    marks = dict(opp.checklist_done or {})
    marks[domain.done_key(opp.stage, key)] = done
    if marks == (opp.checklist_done or {}):
        return render_opportunities(uow, [opp])[0]
    opp.checklist_done, opp.updated_at = marks, utcnow()
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": ["checklist"]})
    return opp


def _close(uow: UnitOfWork, opp: Opportunity, status: str) -> None:
    domain.check_open(opp.status)
    now = utcnow()
    opp.status, opp.closed_at, opp.updated_at = status, now, now
    opp.cycle_days = (now - opp.created_at).days
    opp.probability = 100 if status == "won" else 0
    detection.forget(uow, opp.id)


def win(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, data: dict,
        check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    _close(uow, opp, "won")
    if data.get("amount") is not None:
        opp.amount = data["amount"]
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.won", opp, principal.user_id)
    return opp


def lose(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, reason: str,
         check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    _close(uow, opp, "lost")
    opp.lost_reason = reason
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.lost", opp, principal.user_id, {"reason": reason})
    return opp
