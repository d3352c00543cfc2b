"""Approvals: the policy document, the request an order's terms open, the chain of people who must
decide (resolved from the directory replica), decisions, the caller's queue, and escalation of
requests that waited too long. Nothing here confirms an order whose terms were not approved: a
request is for one set of terms, and an edit supersedes it (orders.update_order)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

from sqlalchemy import func, or_, select

from crmkit import metrics
from crmkit.auth import Principal
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.settings import Settings
from crmkit.visibility import SEES_EVERYTHING

from . import documents, domain
from .db import Approval, ApprovalPolicy, ApprovalStep, DirectoryTeam, DirectoryUser, Order, order_visible
from .events import APPROVAL_DECIDED, APPROVAL_ESCALATED, APPROVAL_REQUESTED, event

log = logging.getLogger(__name__)
POLICY = "approvals"
DECIDERS_OF_ANY_STEP = frozenset({"executive", "admin"})  # "approve anything" (CONTRACT §2)


# ---- the policy document ---------------------------------------------------------------------------------
def policy(uow: UnitOfWork) -> ApprovalPolicy:
    """The policy (the migration seeds it; a database without it uses the documented default)."""
    return documents.read(uow, POLICY, domain.DEFAULT_POLICY, model=ApprovalPolicy)


def _unique_keys(document: dict) -> None:
    keys = [r["key"] for r in document["rules"]]
    if len(keys) != len(set(keys)):
        raise ValidationFailed("rule keys are unique", errors={"rules": ["two rules have the same key"]})


def put_policy(uow: UnitOfWork, principal: Principal, document: dict, check_version) -> ApprovalPolicy:
    return documents.write(uow, principal, POLICY, domain.DEFAULT_POLICY, document, check_version,
                           model=ApprovalPolicy, check=_unique_keys)


# ---- the chain ---------------------------------------------------------------------------------------
def _active_user(uow: UnitOfWork, user_id: str | None) -> bool:
    user = uow.session.get(DirectoryUser, user_id) if user_id else None
    return bool(user and user.active)


def resolve_chain(uow: UnitOfWork, levels: list[str], owner_id: str | None, team_id: str | None,
                  excluded: frozenset[str] = frozenset()) -> list[tuple[str, str | None]]:
    """(level, approver) for each level that must decide, lowest first. The owner's team's manager,
    that team's parent's manager, then any executive (None). A level with nobody to fill it (no
    manager, a deactivated one, or the owner or requester themselves: nobody approves their own order)
    passes the decision up to the next level, so a request never loses an approver; one person
    filling two levels decides once."""
    team = uow.session.get(DirectoryTeam, team_id) if team_id else None
    parent = uow.session.get(DirectoryTeam, team.parent_team_id) if team and team.parent_team_id else None
    people = {"manager": team.manager_id if team else None,
              "parent_manager": parent.manager_id if parent else None}
    wanted, steps = set(levels), []
    for level in domain.LEVELS:
        if level not in wanted:
            continue
        if level == "executive":
            steps.append((level, None))
            continue
        who = people[level]
        if who and who != owner_id and who not in excluded and _active_user(uow, who):
            if who not in [approver for _, approver in steps]:
                steps.append((level, who))
        else:
            wanted.add(domain.next_level(level))
    return steps


def open_approval(uow: UnitOfWork, settings: Settings, order: Order, terms: str, requested_by: str,
                  reasons: list[dict], levels: list[str], policy_version: int) -> Approval:
    now = utcnow()
    chain = resolve_chain(uow, levels, order.owner_id, order.team_id, frozenset({requested_by}))
    approval = Approval(id=uuid.uuid4(), order_id=order.id, status="pending", terms=terms, reasons=reasons,
                        requested_by=requested_by, policy_version=policy_version, current_step=0,
                        current_level=chain[0][0], current_approver=chain[0][1], waiting_since=now,
                        created_at=now, version=1)
    uow.session.add(approval)
    uow.session.flush()
    uow.session.add_all(ApprovalStep(approval_id=approval.id, position=i, level=level, approver_id=who,
                                     status="pending" if i == 0 else "waiting") for i, (level, who) in enumerate(chain))
    uow.session.flush()
    publish_approval(uow, settings, APPROVAL_REQUESTED, approval, order, requested_by)
    return approval


def open_request_of(uow: UnitOfWork, order_id: uuid.UUID) -> Approval | None:
    return uow.session.execute(select(Approval).where(Approval.order_id == order_id, Approval.status == "pending")
                               .with_for_update()).scalar_one_or_none()


def close_open_request(uow: UnitOfWork, settings: Settings, order: Order, status: str, actor: str) -> None:
    """An order's pending request ends without a decision: superseded by new terms, or the order cancelled."""
    approval = open_request_of(uow, order.id)
    if approval is None:
        return
    approval.status, approval.closed_at = status, utcnow()
    approval.current_approver = approval.current_level = approval.waiting_since = None
    for step in steps_of(uow, approval.id):
        if step.status in ("pending", "waiting"):
            step.status = "closed"
    uow.session.flush()
    publish_approval(uow, settings, APPROVAL_DECIDED, approval, order, actor, extra={"comment": f"closed: {status}"})


def steps_of(uow: UnitOfWork, approval_id: uuid.UUID) -> list[ApprovalStep]:
    return uow.session.execute(select(ApprovalStep).where(ApprovalStep.approval_id == approval_id)
                               .order_by(ApprovalStep.position)).scalars().all()


# ---- reading -------------------------------------------------------------------------------------------
def _visible(principal: Principal):
    """An approval is seen by whoever sees its order, and by whoever must decide it now (a past
    approver who no longer manages the team sees it no more)."""
    if principal.role in SEES_EVERYTHING:
        return Approval.id.is_not(None)
    return or_(Approval.order_id.in_(select(Order.id).where(order_visible(principal))),
               Approval.current_approver == principal.user_id)


def visible_approval(uow: UnitOfWork, principal: Principal, approval_id: uuid.UUID, *, for_update=False) -> Approval:
    stmt = select(Approval).where(Approval.id == approval_id, _visible(principal))
    approval = uow.session.execute(stmt.with_for_update(of=Approval) if for_update else stmt).scalar_one_or_none()
    if approval is None:
        raise NotFound(f"approval {approval_id} not found")
    return approval


def render(uow: UnitOfWork, approvals: list[Approval]) -> list[Approval]:
    ids = [a.id for a in approvals]
    steps: dict = {i: [] for i in ids}
    orders: dict = {}
    if ids:
        for step in uow.session.execute(select(ApprovalStep).where(ApprovalStep.approval_id.in_(ids))
                                        .order_by(ApprovalStep.approval_id, ApprovalStep.position)).scalars():
            steps[step.approval_id].append(step)
        orders = {o.id: o for o in uow.session.execute(
            select(Order).where(Order.id.in_({a.order_id for a in approvals}))).scalars()}
    for a in approvals:
        a.steps, order = steps[a.id], orders[a.order_id]
        a.order_number, a.owner_id, a.team_id = order.number, order.owner_id, order.team_id
        a.order_total, a.currency = order.total, order.currency
    return approvals


def get_approval(uow: UnitOfWork, principal: Principal, approval_id: uuid.UUID) -> Approval:
    return render(uow, [visible_approval(uow, principal, approval_id)])[0]


def list_approvals(uow: UnitOfWork, principal: Principal, args: dict):
    """`?status=pending` alone is the caller's queue: what waits for their decision. Any other
    filter lists the approvals the caller may see (their orders', their teams')."""
    stmt = select(Approval)
    if args.get("status") == "pending" and args.get("order_id") is None:
        mine = Approval.current_approver == principal.user_id
        if principal.role in DECIDERS_OF_ANY_STEP:
            mine = or_(mine, Approval.current_approver.is_(None))
        own_orders = select(Order.id).where(Order.owner_id == principal.user_id)
        stmt = stmt.where(Approval.status == "pending", mine, Approval.order_id.not_in(own_orders))
    else:
        stmt = stmt.where(_visible(principal))
        if args.get("status"):
            stmt = stmt.where(Approval.status == args["status"])
        if args.get("order_id"):
            stmt = stmt.where(Approval.order_id == args["order_id"])
    rows, cursor = paginate(uow.session, stmt, model=Approval, sort=SortSpec("created_at", descending=False),
                            limit=args["limit"], cursor=args.get("cursor"))
    return render(uow, rows), cursor


# ---- deciding ------------------------------------------------------------------------------------------
def decide(uow: UnitOfWork, settings: Settings, principal: Principal, approval_id: uuid.UUID, decision: str,
           comment: str | None) -> Approval:
    """Approve or reject the step waiting now. Decisions are final: a decided step cannot be decided
    again, and a request no longer pending takes no decision at all."""
    from . import lifecycle
    from .orders import record

    # The order first, then the request: the order a PATCH or a cancel locks before the request, so
    # two of them never wait on each other.
    order_id = visible_approval(uow, principal, approval_id).order_id
    order = uow.session.execute(select(Order).where(Order.id == order_id).with_for_update()).scalar_one()
    approval = visible_approval(uow, principal, approval_id, for_update=True)
    if principal.user_id in (order.owner_id, approval.requested_by):
        raise Forbidden("nobody approves their own order")
    if approval.status != "pending":
        raise Conflict(f"this approval is {approval.status}; its decisions are final")
    steps = steps_of(uow, approval.id)
    step = steps[approval.current_step]
    if principal.role not in DECIDERS_OF_ANY_STEP:
        if step.approver_id != principal.user_id:
            raise Forbidden("this approval waits for someone else's decision")
        # Named when the chain was made: a manager who has since stopped managing the team decides no
        # more (one handed the step by a handover was named for exactly this).
        if order.team_id not in principal.manages and step.escalated_from is None:
            raise Forbidden("you no longer manage this order's team")
    if decision == "reject" and not (comment or "").strip():
        raise ValidationFailed("say why you reject it", errors={"comment": ["a rejection needs a comment"]})
    now = utcnow()
    step.status = "approved" if decision == "approve" else "rejected"
    step.decided_by, step.decided_at, step.comment = principal.user_id, now, comment
    record(uow, order, principal.user_id, f"approval_{step.status}", approval_id=str(approval.id), level=step.level,
           comment=comment)
    later = [s for s in steps if s.position > step.position and s.status == "waiting"]
    if decision == "approve" and later:
        later[0].status = "pending"
        approval.current_step, approval.current_level = later[0].position, later[0].level
        approval.current_approver, approval.waiting_since = later[0].approver_id, now
    else:
        approval.status = "approved" if decision == "approve" else "rejected"
        approval.closed_at, approval.waiting_since = now, None
        approval.current_step = approval.current_approver = approval.current_level = None
        for s in later:
            s.status = "closed"
    uow.session.flush()
    publish_approval(uow, settings, APPROVAL_DECIDED, approval, order, principal.user_id,
             extra={"decision": decision, "decided_by": principal.user_id, "comment": comment})
    if approval.status == "approved":
        lifecycle.confirm_approved(uow, settings, order, approval, principal.user_id)
    elif approval.status == "rejected":
        lifecycle.return_to_draft(uow, settings, order, principal.user_id, comment)
    return render(uow, [approval])[0]


# ---- escalation ----------------------------------------------------------------------------------------
def escalate_due(uow: UnitOfWork, settings: Settings, now: dt.datetime | None = None, limit: int = 100) -> int:
    """Requests waiting longer than the policy's escalate_after_hours go to the next approver up: the
    next step of the chain if there is one, else the next level. Executives are the top: a request
    waiting for them stays (and shows in every executive's queue)."""
    hours = policy(uow).document.get("escalate_after_hours")
    if not hours:
        return 0
    now = now or utcnow()
    due = uow.session.execute(select(Approval).where(
        Approval.status == "pending", Approval.current_level != "executive",
        Approval.waiting_since <= now - dt.timedelta(hours=float(hours)))
        .order_by(Approval.waiting_since).limit(limit).with_for_update(skip_locked=True)).scalars().all()
    for approval in due:
        order = uow.session.get(Order, approval.order_id)
        steps = steps_of(uow, approval.id)
        step = steps[approval.current_step]
        step.status, missed = "escalated", step.approver_id
        later = [s for s in steps if s.position > step.position and s.status == "waiting"]
        if later:
            target = later[0]
        else:
            above = domain.LEVELS[domain.LEVELS.index(step.level) + 1:]
            level, who = resolve_chain(uow, [above[0]], order.owner_id, order.team_id)[0]
            target = ApprovalStep(approval_id=approval.id, position=len(steps), level=level, approver_id=who)
            uow.session.add(target)
        target.status, target.escalated_from = "pending", missed
        approval.current_step, approval.current_level = target.position, target.level
        approval.current_approver, approval.waiting_since = target.approver_id, now
        uow.session.flush()
        publish_approval(uow, settings, APPROVAL_ESCALATED, approval, order, None, extra={"escalated_from": missed})
    return len(due)


def waiting(uow: UnitOfWork, now: dt.datetime | None = None) -> tuple[int, float]:
    """(pending requests, seconds the longest-waiting one has waited), for the metrics."""
    count, oldest = uow.session.execute(select(func.count(), func.min(Approval.waiting_since))
                                        .where(Approval.status == "pending")).one()
    return count, 0.0 if oldest is None else ((now or utcnow()) - oldest).total_seconds()


def escalation_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 60.0) -> None:
    """The worker's schedule: look for requests waiting too long every `interval` seconds, and say
    how many wait and for how long (crm_approvals_*)."""
    while not stop.wait(interval):
        try:
            with db.uow() as uow:
                if escalate_due(uow, settings):
                    uow.commit()
            with db.uow(readonly=True) as uow:
                count, oldest = waiting(uow)
            metrics.APPROVALS_PENDING.labels("orders").set(count)
            metrics.APPROVALS_OLDEST_WAIT.labels("orders").set(oldest)
        except Exception:  # a schedule must outlive one bad run; it logs and tries again
            log.exception("approval escalation failed")


# ---- events --------------------------------------------------------------------------------------------
def publish_approval(uow: UnitOfWork, settings: Settings, kind: str, approval: Approval, order: Order, actor,
             extra: dict | None = None) -> None:
    doc = {"id": approval.id, "order_id": order.id, "order_number": order.number, "owner_id": order.owner_id,
           "team_id": order.team_id, "status": approval.status, "reasons": approval.reasons,
           "steps": steps_of(uow, approval.id), "current_approver_id": approval.current_approver,
           "current_level": approval.current_level, "requested_by": approval.requested_by,
           "created_at": approval.created_at, "closed_at": approval.closed_at}
    uow.publish(*event(settings, kind, order.id, {"approval": doc, **(extra or {})}, actor=actor))
