"""Accounts HTTP API: accounts, their contacts, virtual teams and activities.
Thin routes: parse, call one use case, commit, render."""
from __future__ import annotations

import logging
import uuid

from marshmallow import RAISE

from crmkit.activities import ActivityCreateSchema
from crmkit.etag import IF_MATCH, require_if_match
from crmkit.idempotency import idempotent
from crmkit.pagination import PageArgsSchema
from crmkit.web import Blueprint, ctx, principal, roles

from . import accounts, activities, contacts
from .api_shared import DEAL_READERS, SELLERS, tagged
from .schemas import (
    AccountCreateSchema,
    AccountListArgsSchema,
    AccountPageSchema,
    AccountSchema,
    AccountWriteSchema,
    ActivityPageSchema,
    ActivitySchema,
    ContactCreateAnywhereSchema,
    ContactCreateSchema,
    ContactListArgsSchema,
    ContactPageSchema,
    ContactSchema,
    ContactWriteSchema,
    TeamSchema,
)

log = logging.getLogger(__name__)
accounts_blp = Blueprint("accounts", __name__, description="Accounts (customers) and their contacts")

# ---- accounts ----------------------------------------------------------------------------------------
@accounts_blp.route("/accounts", methods=["POST"])
@accounts_blp.arguments(AccountCreateSchema)
@idempotent
@accounts_blp.response(201, AccountSchema)
@roles(*SELLERS)
def create_account(fields):
    """Create an account (a customer); you own it unless a leader names an owner.

    An `owner_id` must be an active rep or manager, within your teams for a manager.
    """
    with ctx().db.uow() as uow:
        account = accounts.create_account(uow, ctx().settings, principal(), fields)
        uow.commit()
    return account, 201, {**tagged(account), "Location": f"/api/v1/accounts/{account.id}"}


@accounts_blp.route("/accounts", methods=["GET"])
@accounts_blp.arguments(AccountListArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, AccountPageSchema)
@roles(*DEAL_READERS)
def list_accounts(args):
    """List the accounts you may see.

    `cursor` is opaque: only a `next_cursor` this API answered.
    """
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = accounts.list_accounts(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["GET"])
@accounts_blp.response(200, AccountSchema)
@roles(*DEAL_READERS)
def get_account(account_id: uuid.UUID):
    """Read one account."""
    with ctx().db.uow(readonly=True) as uow:
        account = accounts.render_accounts(uow, [accounts.visible_account(uow, principal(), account_id)])[0]
    return account, 200, tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["PATCH"])
@accounts_blp.arguments(AccountWriteSchema)
@accounts_blp.response(200, AccountSchema)
@accounts_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_account(changes, account_id: uuid.UUID):
    """Change an account (its owner or their leader).

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        account = accounts.update_account(uow, ctx().settings, principal(), account_id, changes, require_if_match)
        uow.commit()
    return account, 200, tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["DELETE"])
@accounts_blp.response(204)
@roles(*SELLERS)
def delete_account(account_id: uuid.UUID):
    """Delete an account with no open deals (soft)."""
    with ctx().db.uow() as uow:
        accounts.delete_account(uow, ctx().settings, principal(), account_id)
        uow.commit()


@accounts_blp.route("/accounts/<uuid:account_id>/team", methods=["PUT"])
@accounts_blp.arguments(TeamSchema)
@accounts_blp.response(200, AccountSchema)
@roles(*SELLERS)
def put_account_team(body, account_id: uuid.UUID):
    """Replace an account's virtual team.

    Each member once, every one an active user.
    """
    with ctx().db.uow() as uow:
        account = accounts.set_account_team(uow, ctx().settings, principal(), account_id, body["members"])
        uow.commit()
    return account, 200, tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>/contacts", methods=["POST"])
@accounts_blp.arguments(ContactCreateSchema)
@idempotent
@accounts_blp.response(201, ContactSchema)
@roles(*SELLERS)
def add_contact(fields, account_id: uuid.UUID):
    """Add a contact to an account; the first is primary."""
    with ctx().db.uow() as uow:
        contact = contacts.add_contact(uow, ctx().settings, principal(), account_id, fields)
        uow.commit()
    return contact, 201, {**tagged(contact), "Location": f"/api/v1/contacts/{contact.id}"}


@accounts_blp.route("/accounts/<uuid:account_id>/contacts", methods=["GET"])
@accounts_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ContactPageSchema)
@roles(*DEAL_READERS)
def list_account_contacts(args, account_id: uuid.UUID):
    """List an account's contacts."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = contacts.list_contacts(uow, principal(), args, account_id)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/contacts", methods=["POST"])
@accounts_blp.arguments(ContactCreateAnywhereSchema)
@idempotent
@accounts_blp.response(201, ContactSchema)
@roles(*SELLERS)
def create_contact(fields):
    """Add a contact to the account named in the body."""
    with ctx().db.uow() as uow:
        contact = contacts.add_contact(uow, ctx().settings, principal(), fields.pop("account_id"), fields)
        uow.commit()
    return contact, 201, {**tagged(contact), "Location": f"/api/v1/contacts/{contact.id}"}


@accounts_blp.route("/contacts", methods=["GET"])
@accounts_blp.arguments(ContactListArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ContactPageSchema)
@roles(*DEAL_READERS)
def list_contacts(args):
    """List the contacts of the accounts you may see."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = contacts.list_contacts(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["GET"])
@accounts_blp.response(200, ContactSchema)
@roles(*DEAL_READERS)
def get_contact(contact_id: uuid.UUID):
    """Read one contact."""
    with ctx().db.uow(readonly=True) as uow:
        contact = contacts.get_contact(uow, principal(), contact_id)
    return contact, 200, tagged(contact)


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["PATCH"])
@accounts_blp.arguments(ContactWriteSchema)
@accounts_blp.response(200, ContactSchema)
@accounts_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_contact(changes, contact_id: uuid.UUID):
    """Change a contact; making it primary demotes the old one.

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        contact = contacts.update_contact(uow, ctx().settings, principal(), contact_id, changes, require_if_match)
        uow.commit()
    return contact, 200, tagged(contact)


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["DELETE"])
@accounts_blp.response(204)
@roles(*SELLERS)
def delete_contact(contact_id: uuid.UUID):
    """Delete a contact (soft)."""
    with ctx().db.uow() as uow:
        contacts.delete_contact(uow, ctx().settings, principal(), contact_id)
        uow.commit()


@accounts_blp.route("/accounts/<uuid:account_id>/activities", methods=["POST"])
@accounts_blp.arguments(ActivityCreateSchema)
@idempotent
@accounts_blp.response(201, ActivitySchema)
@roles(*DEAL_READERS)
def log_account_activity(data, account_id: uuid.UUID):
    """Log a call, visit or e-mail on an account."""
    with ctx().db.uow() as uow:
        activity = activities.log_activity(uow, ctx().settings, principal(), data, account_id=account_id)
        uow.commit()
    return activity


@accounts_blp.route("/accounts/<uuid:account_id>/activities", methods=["GET"])
@accounts_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ActivityPageSchema)
@roles(*DEAL_READERS)
def list_account_activities(args, account_id: uuid.UUID):
    """List an account's activities, newest first."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = activities.list_activities(uow, principal(), args, account_id=account_id)
    return {"items": items, "next_cursor": next_cursor}
