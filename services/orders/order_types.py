"""What counts toward quota: the order types (data an admin edits) and house accounts. A change
re-derives counts_toward_quota on orders not yet confirmed; a confirmed order keeps the standing
it was credited with."""
from __future__ import annotations

import uuid

from sqlalchemy import or_, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, NotFound, ValidationFailed
from crmkit.settings import Settings
from crmkit.visibility import SEES_EVERYTHING

from .db import AccountReplica, Order, OrderType
from .events import ORDER_UPDATED
from .orders import order_event, refresh_quota, render

UNCONFIRMED = ("draft", "pending_approval")


def order_types(uow: UnitOfWork) -> list[OrderType]:
    return uow.session.execute(select(OrderType).order_by(OrderType.position)).scalars().all()


def _requote(uow: UnitOfWork, settings: Settings, actor: str, where) -> None:
    orders = uow.session.execute(select(Order).where(Order.status.in_(UNCONFIRMED), where)
                                 .with_for_update()).scalars().all()
    render(uow, orders)
    for order in orders:
        before = (order.counts_toward_quota, order.quota_reason)
        refresh_quota(uow, order)
        if (order.counts_toward_quota, order.quota_reason) != before:
            order.updated_at = utcnow()
            uow.session.flush()
            order_event(uow, settings, ORDER_UPDATED, order, actor, changed=["counts_toward_quota"])


def put_order_types(uow: UnitOfWork, settings: Settings, principal: Principal, types: list[dict]) -> list[OrderType]:
    """The list replaces the types. A type still named by an order stays (it may be relabelled, or
    stop counting); `standard` always exists, as the default of new orders."""
    keys = [t["key"] for t in types]
    if len(set(keys)) != len(keys):
        raise ValidationFailed("type keys are unique", errors={"types": ["a key appears twice"]})
    if "standard" not in keys:
        raise ValidationFailed("the standard type stays", errors={"types": ["standard is the default order type"]})
    current = {t.key: t for t in order_types(uow)}
    for gone in set(current) - set(keys):
        if uow.session.execute(select(Order.id).where(Order.type == gone).limit(1)).first():
            raise Conflict(f"orders of type {gone} exist; it cannot be removed")
        uow.session.delete(current[gone])
    changed = []
    for position, t in enumerate(types):
        row = current.get(t["key"]) or OrderType(key=t["key"])
        if row.counts_toward_quota is not None and row.counts_toward_quota != t["counts_toward_quota"]:
            changed.append(row.key)
        row.label, row.counts_toward_quota, row.position = t["label"], t["counts_toward_quota"], position
        uow.session.add(row)
    uow.session.flush()
    if changed:
        _requote(uow, settings, principal.user_id, Order.type.in_(changed))
    return order_types(uow)


def house_accounts(uow: UnitOfWork, principal: Principal) -> list[AccountReplica]:
    """The house accounts the caller may see (a manager, their teams'; executives and admins, all)."""
    stmt = select(AccountReplica).where(AccountReplica.house_account.is_(True), AccountReplica.deleted.is_(False))
    if principal.role not in SEES_EVERYTHING:
        stmt = stmt.where(or_(AccountReplica.owner_id == principal.user_id,
                              AccountReplica.team_id.in_(principal.manages or ("",))))
    return uow.session.execute(stmt.order_by(AccountReplica.name, AccountReplica.id)).scalars().all()


def set_house_account(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID,
                      house: bool) -> AccountReplica:
    account = uow.session.get(AccountReplica, account_id, with_for_update=True)
    if account is None or account.deleted:
        raise NotFound(f"account {account_id} not found")
    if account.house_account != house:
        account.house_account = house
        uow.session.flush()
        _requote(uow, settings, principal.user_id, Order.account_id == account_id)
    return account


