"""Accounts (customers): create, read, list, edit, delete, their virtual team, and their events. Each use
case leaves the commit to its caller (the API commits one request, a consumer one batch of events)."""
from __future__ import annotations

import uuid

from sqlalchemy import delete, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, NotFound
from crmkit.pagination import parse_sort
from crmkit.settings import Settings

from . import detection, domain, people
from .db import (
    ACCOUNT_SORTABLE,
    Account,
    AccountMember,
    AccountRepository,
    Opportunity,
    open_deal_ids,
)
from .events import event


def render_accounts(uow: UnitOfWork, accounts: list[Account]) -> list[Account]:
    ids = [a.id for a in accounts]
    teams: dict = {i: [] for i in ids}
    if ids:
        for m in uow.session.execute(select(AccountMember).where(AccountMember.account_id.in_(ids))
                                     .order_by(AccountMember.user_id)).scalars():
            teams[m.account_id].append({"user_id": m.user_id, "role": m.role})
    for a in accounts:
        a.team = teams[a.id]
    return accounts


def account_event(uow, settings, kind: str, account: Account, actor, extra: dict | None = None) -> None:
    render_accounts(uow, [account])
    uow.publish(*event(settings, kind, account.id, {"account": account, **(extra or {})},
                       actor=actor))


def visible_account(uow: UnitOfWork, principal: Principal, account_id: uuid.UUID, *, for_update=False) -> Account:
    account = AccountRepository(uow.session, principal).get(account_id, for_update=for_update)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


def writable_account(uow: UnitOfWork, principal: Principal, account_id: uuid.UUID) -> Account:
    account = visible_account(uow, principal, account_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    return account


def create_account(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Account:
    owner_id, team_id = people.ownership(uow, principal, fields.pop("owner_id", None))
    now = utcnow()
    fields.setdefault("type", "b2b")
    account = Account(id=uuid.uuid4(), version=1, tier="unranked", owner_id=owner_id, team_id=team_id,
                      created_by=principal.user_id, created_at=now, updated_at=now, **fields)
    uow.session.add(account)
    account_event(uow, settings, "account.created", account, principal.user_id)
    return account


def list_accounts(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), ACCOUNT_SORTABLE, "-created_at")
    items, cursor = AccountRepository(uow.session, principal).list(args, sort=sort, limit=args.pop("limit"),
                                                                   cursor=args.pop("cursor", None))
    return render_accounts(uow, items), cursor


def update_account(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID, changes: dict,
                   check_version) -> Account:
    account = writable_account(uow, principal, account_id)
    check_version(account.version)
    changed = {k: v for k, v in changes.items() if getattr(account, k) != v}
    if not changed:
        return render_accounts(uow, [account])[0]
    for name, value in changed.items():
        setattr(account, name, value)
    account.updated_at = utcnow()
    uow.session.flush()
    account_event(uow, settings, "account.updated", account, principal.user_id, {"changed": sorted(changed)})
    if "name" in changed:  # a renamed customer may now look like (or unlike) another rep's
        detection.queue_recheck(uow, _open_deal_ids(uow, account.id), principal.user_id)
    return account


def _open_opportunities_of(uow: UnitOfWork, account_id: uuid.UUID) -> list[Opportunity]:
    return list(uow.session.execute(select(Opportunity).where(
        Opportunity.account_id == account_id, Opportunity.status == "open", Opportunity.deleted_at.is_(None))).scalars())


def _open_deal_ids(uow: UnitOfWork, account_id: uuid.UUID) -> list[uuid.UUID]:
    return list(uow.session.execute(open_deal_ids().where(Opportunity.account_id == account_id)).scalars())


def delete_account(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID) -> None:
    account = writable_account(uow, principal, account_id)
    if _open_opportunities_of(uow, account.id):
        raise Conflict("the account has open opportunities; win, lose or delete them first")
    account.deleted_at = account.updated_at = utcnow()
    uow.session.flush()
    account_event(uow, settings, "account.deleted", account, principal.user_id)


def set_account_team(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID,
                     members: list[dict]) -> Account:
    account = writable_account(uow, principal, account_id)
    members = people.check_members(uow, members)
    uow.session.execute(delete(AccountMember).where(AccountMember.account_id == account.id))
    uow.session.add_all([AccountMember(account_id=account.id, **m) for m in members])
    account.updated_at = utcnow()
    uow.session.flush()
    account_event(uow, settings, "account.updated", account, principal.user_id, {"changed": ["team"]})
    return account
