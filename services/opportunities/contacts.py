"""A customer's contacts: one primary at a time, and every change in the customer's event order."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select, update

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound
from crmkit.pagination import SortSpec, paginate
from crmkit.settings import Settings

from . import domain
from .accounts import visible_account, writable_account
from .db import (
    Account,
    Contact,
    account_visible,
)
from .events import event


def _visible_contact(uow: UnitOfWork, principal: Principal, contact_id: uuid.UUID, *, for_update=False):
    contact = uow.session.get(Contact, contact_id, with_for_update=for_update)
    if contact is None or contact.deleted_at is not None:
        raise NotFound(f"contact {contact_id} not found")
    try:
        account = visible_account(uow, principal, contact.account_id)
    except NotFound:
        raise NotFound(f"contact {contact_id} not found") from None
    return contact, account


def _make_primary(uow: UnitOfWork, contact: Contact) -> None:
    uow.session.execute(update(Contact).where(Contact.account_id == contact.account_id, Contact.id != contact.id,
                                              Contact.is_primary.is_(True))
                        .values(is_primary=False, version=Contact.version + 1, updated_at=utcnow()))


def _has_primary(uow: UnitOfWork, account_id: uuid.UUID) -> bool:
    return uow.session.execute(select(Contact.id).where(Contact.account_id == account_id, Contact.deleted_at.is_(None),
                                                        Contact.is_primary.is_(True)).limit(1)).first() is not None


def add_contact(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID, fields: dict,
                *, contact_id: uuid.UUID | None = None) -> Contact:
    account = writable_account(uow, principal, account_id)
    return new_contact(uow, settings, account, fields, created_by=principal.user_id, actor=principal.user_id,
                        contact_id=contact_id)


def new_contact(uow, settings, account: Account, fields: dict, *, created_by: str, actor, contact_id=None) -> Contact:
    """The first contact of an account is its primary one; a new primary contact demotes the old."""
    now = utcnow()
    primary = fields.pop("is_primary", None)
    if primary is None:
        primary = not _has_primary(uow, account.id)
    contact = Contact(id=contact_id or uuid.uuid4(), account_id=account.id, version=1, is_primary=primary,
                      created_by=created_by, created_at=now, updated_at=now, **fields)
    if primary:
        _make_primary(uow, contact)
    uow.session.add(contact)
    uow.publish(*event(settings, "contact.created", account.id, {"contact": contact}, actor=actor))
    return contact


def get_contact(uow: UnitOfWork, principal: Principal, contact_id: uuid.UUID) -> Contact:
    return _visible_contact(uow, principal, contact_id)[0]


def list_contacts(uow: UnitOfWork, principal: Principal, args: dict, account_id: uuid.UUID | None = None):
    stmt = select(Contact).where(Contact.deleted_at.is_(None))
    if account_id is not None:
        visible_account(uow, principal, account_id)  # 404 for an account the caller may not see
        stmt = stmt.where(Contact.account_id == account_id)
    else:
        stmt = stmt.join(Account, Account.id == Contact.account_id).where(
            Account.deleted_at.is_(None), account_visible(principal))
        if args.get("account_id") is not None:
            stmt = stmt.where(Contact.account_id == args["account_id"])
    if args.get("q"):
        needle = f"%{args['q'].lower()}%"
        stmt = stmt.where(func.lower(Contact.name).like(needle) | func.lower(Contact.email).like(needle))
    return paginate(uow.session, stmt, model=Contact, sort=SortSpec("created_at", descending=False),
                    limit=args["limit"], cursor=args.get("cursor"))


def update_contact(uow: UnitOfWork, settings: Settings, principal: Principal, contact_id: uuid.UUID, changes: dict,
                   check_version) -> Contact:
    contact, account = _visible_contact(uow, principal, contact_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    check_version(contact.version)
    changed = {k: v for k, v in changes.items() if getattr(contact, k) != v}
    if not changed:
        return contact
    if changed.get("is_primary") is True:
        _make_primary(uow, contact)
    for name, value in changed.items():
        setattr(contact, name, value)
    contact.updated_at = utcnow()
    uow.session.flush()
    uow.publish(*event(settings, "contact.updated", account.id, {"contact": contact,
                                                                 "changed": sorted(changed)}, actor=principal.user_id))
    return contact


def delete_contact(uow: UnitOfWork, settings: Settings, principal: Principal, contact_id: uuid.UUID) -> None:
    contact, account = _visible_contact(uow, principal, contact_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    contact.deleted_at = contact.updated_at = utcnow()
    contact.is_primary = False
    uow.session.flush()
    uow.publish(*event(settings, "contact.deleted", account.id, {"contact": contact},
                       actor=principal.user_id))
