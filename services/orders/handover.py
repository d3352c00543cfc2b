"""crm.directory.v1 in the orders service (docs/handover.md): the kit's replica upkeep and handover
saga, with how this service moves a leaver's work: their orders not yet paid or cancelled, and the
approvals waiting for their decision. Credit already given (credited_to, set when an order was
confirmed) stays with the leaver."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.db import UnitOfWork, utcnow
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.handover import Handovers
from crmkit.settings import Settings

from . import SERVICE, domain
from .approvals import publish_approval, steps_of
from .db import Approval, CompletedHandover, DirectoryTeam, DirectoryUser, Order
from .events import APPROVAL_ESCALATED, ORDER_UPDATED, event
from .orders import order_event, record


def directory_handlers(settings: Settings) -> dict:
    """This service's dispatch table for crm.directory.v1."""
    return Handovers(
        SERVICE, DirectoryUser, DirectoryTeam, CompletedHandover,
        move=lambda uow, leaver, heir, team, actor, handover_id: move_work(
            uow, settings, leaver, heir, team, actor, handover_id),
        answer=lambda uow, handover_id, data, actor: uow.publish(*event(
            settings, HANDOVER_COMPLETED, handover_id, data, actor=actor))).handlers()


def move_work(uow: UnitOfWork, settings: Settings, leaver: str, heir: str, team: str | None, actor,
              handover_id: str | None) -> dict:
    now = utcnow()
    orders = uow.session.execute(select(Order).where(Order.owner_id == leaver, Order.status.in_(domain.OPEN))
                                 .order_by(Order.id).with_for_update()).scalars().all()
    for order in orders:
        order.owner_id, order.team_id, order.updated_at = heir, team, now
        record(uow, order, actor, "handed_over", previous_owner_id=leaver, handover_id=handover_id)
    uow.session.flush()
    for order in orders:
        order_event(uow, settings, ORDER_UPDATED, order, actor, changed=["owner_id", "team_id"],
                    previous_owner_id=leaver, reason="handover")
    waiting = uow.session.execute(select(Approval).where(Approval.status == "pending",
                                                         Approval.current_approver == leaver)
                                  .order_by(Approval.id).with_for_update()).scalars().all()
    for approval in waiting:
        order = uow.session.get(Order, approval.order_id)
        step = steps_of(uow, approval.id)[approval.current_step]
        if heir == order.owner_id:  # the heir cannot approve their own order: any executive decides
            step.approver_id, step.level = None, "executive"
        else:
            step.approver_id = heir
        step.escalated_from = leaver
        approval.current_approver, approval.current_level, approval.waiting_since = step.approver_id, step.level, now
        uow.session.flush()
        publish_approval(uow, settings, APPROVAL_ESCALATED, approval, order, actor, extra={"escalated_from": leaver})
    return {"moved": len(orders) + len(waiting), "orders": len(orders), "approvals": len(waiting)}
