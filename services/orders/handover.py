"""crm.directory.v1 in the orders service (docs/handover.md): the kit's replica upkeep and handover
saga, with how this service moves a leaver's work: their orders not yet paid or cancelled, and the
approvals waiting for their decision. Credit already given (credited_to, set when an order was
confirmed) stays with the leaver."""
from __future__ import annotations

from sqlalchemy import and_, or_, select

from crmkit.db import UnitOfWork, utcnow
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.handover import Handovers
from crmkit.settings import Settings

from . import SERVICE, domain
from .approvals import publish_approval, resolve_chain
from .db import Approval, ApprovalStep, CompletedHandover, DirectoryTeam, DirectoryUser, Order
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
    approvals = _move_decisions(uow, settings, leaver, heir, {o.id for o in orders}, actor, now)
    return {"moved": len(orders) + approvals, "orders": len(orders), "approvals": approvals}


def _move_decisions(uow: UnitOfWork, settings: Settings, leaver: str, heir: str, moved_orders: set, actor,
                    now) -> int:
    """Steps of pending requests that name the leaver, now or later in the chain, go to the heir if
    the heir may decide them (a manager or an executive who does not own the order); otherwise up a
    level. Steps naming the heir on orders the heir now owns go up a level too: nobody decides
    their own order."""
    heir_user = uow.session.get(DirectoryUser, heir)
    heir_decides = heir_user is not None and heir_user.role in ("manager", "executive")
    rows = uow.session.execute(
        select(ApprovalStep, Approval).join(Approval, Approval.id == ApprovalStep.approval_id)
        .where(Approval.status == "pending", ApprovalStep.status.in_(("pending", "waiting")),
               or_(ApprovalStep.approver_id == leaver,
                   and_(ApprovalStep.approver_id == heir, Approval.order_id.in_(list(moved_orders)))))
        .order_by(Approval.id, ApprovalStep.position).with_for_update()).all()
    touched = {}
    for step, approval in rows:
        order = uow.session.get(Order, approval.order_id)
        if step.approver_id == leaver and heir_decides and heir != order.owner_id:
            step.approver_id = heir
        else:  # up a level: the next manager up, or any executive
            above = domain.next_level(step.level) or "executive"
            step.level, step.approver_id = resolve_chain(uow, [above], order.owner_id, order.team_id,
                                                         frozenset({leaver, heir, approval.requested_by}))[0]
        step.escalated_from = leaver
        if step.position == approval.current_step:
            approval.current_approver, approval.current_level = step.approver_id, step.level
            approval.waiting_since = now
        touched[approval.id] = (approval, order)
    uow.session.flush()
    for approval, order in touched.values():
        publish_approval(uow, settings, APPROVAL_ESCALATED, approval, order, actor, extra={"escalated_from": leaver})
    return len(touched)
