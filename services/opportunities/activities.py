"""What reps did on an account or a deal (calls, visits, e-mails) and what it cost (expenses)."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import ValidationFailed
from crmkit.fields import MONEY_MAX
from crmkit.pagination import SortSpec, paginate
from crmkit.settings import Settings

from .accounts import visible_account
from .db import (
    AccountMember,
    Activity,
    Expense,
    Opportunity,
    OpportunityMember,
    opportunity_visible,
)
from .deals import opportunity_event, visible_opportunity, writable_opportunity
from .events import event


def log_activity(uow: UnitOfWork, settings: Settings, principal: Principal, data: dict, *,
                 account_id: uuid.UUID | None = None, opp_id: uuid.UUID | None = None) -> Activity:
    """Anyone who sees the record may log what they did on it: a virtual-team member too (the
    service role exists for exactly this)."""
    if opp_id is not None:
        record = visible_opportunity(uow, principal, opp_id)
        account_id = record.account_id
        members = select(OpportunityMember.user_id).where(OpportunityMember.opportunity_id == record.id)
    else:
        record = visible_account(uow, principal, account_id)
        members = select(AccountMember.user_id).where(AccountMember.account_id == record.id)
    subject = record.id
    team = sorted(uow.session.execute(members).scalars())
    now = utcnow()
    activity = Activity(id=uuid.uuid4(), account_id=account_id, opportunity_id=opp_id, kind=data["kind"],
                        summary=data.get("summary"), occurred_at=data.get("occurred_at") or now,
                        next_contact_at=data.get("next_contact_at"), created_by=principal.user_id, created_at=now)
    uow.session.add(activity)
    uow.publish(*event(settings, "activity.logged", subject, {
        "activity_id": activity.id, "account_id": account_id, "opportunity_id": opp_id,
        "kind": activity.kind, "summary": activity.summary, "occurred_at": activity.occurred_at,
        "next_contact_at": activity.next_contact_at,
        "logged_by": principal.user_id, "owner_id": record.owner_id, "team_id": record.team_id,
        "member_ids": team}, actor=principal.user_id))
    return activity


def list_activities(uow: UnitOfWork, principal: Principal, args: dict, *, account_id: uuid.UUID | None = None,
                    opp_id: uuid.UUID | None = None):
    """An account's activities include those on its opportunities the caller sees; newest first."""
    if opp_id is not None:
        stmt = select(Activity).where(Activity.opportunity_id == visible_opportunity(uow, principal, opp_id).id)
    else:
        # Seeing the account is not seeing every deal on it: another rep's deal keeps its history.
        visible_deals = select(Opportunity.id).where(Opportunity.deleted_at.is_(None), opportunity_visible(principal))
        stmt = select(Activity).where(Activity.account_id == visible_account(uow, principal, account_id).id,
                                      Activity.opportunity_id.is_(None) | Activity.opportunity_id.in_(visible_deals))
    return paginate(uow.session, stmt, model=Activity, sort=SortSpec("occurred_at", descending=True),
                    limit=args["limit"], cursor=args.get("cursor"))


def add_expense(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, data: dict) -> Expense:
    opp = writable_opportunity(uow, principal, opp_id)
    total = (opp.expense_total or Decimal("0")) + data["amount"]
    if total >= MONEY_MAX:
        raise ValidationFailed("the opportunity's expenses would exceed what an amount can hold",
                               errors={"amount": [f"the total must stay below {MONEY_MAX}"]})
    expense = Expense(id=uuid.uuid4(), opportunity_id=opp.id, currency=opp.currency, created_by=principal.user_id,
                      created_at=utcnow(), **data)
    uow.session.add(expense)
    opp.expense_total = total
    opp.updated_at = utcnow()
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {
        "changed": ["expense_total"], "expense": {"id": str(expense.id), "category": expense.category,
                                                  "amount": str(expense.amount)}})
    return expense


def list_expenses(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID, args: dict):
    opp = visible_opportunity(uow, principal, opp_id)
    return paginate(uow.session, select(Expense).where(Expense.opportunity_id == opp.id), model=Expense,
                    sort=SortSpec("created_at", descending=True), limit=args["limit"], cursor=args.get("cursor"))
