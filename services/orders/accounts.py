"""The replica of accounts, kept from crm.opportunities.v1 (the opportunities service owns them),
as the leads service keeps the directory: orders are placed on accounts, and an order's readers
follow its account's virtual team. Read through a schema of this service's own (services never
import each other), taking only the fields it needs; an event it cannot read is dead-lettered."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields
from sqlalchemy import delete

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow

from .db import AccountMemberReplica, AccountReplica

ACCOUNT_EVENTS = ("account.created", "account.updated", "account.deleted")


class _Member(Schema):
    class Meta:
        unknown = EXCLUDE

    user_id = fields.String(required=True)
    role = fields.String(required=True)


class _Account(Schema):
    """account.*.v1's `data.account`, the part this service keeps."""

    class Meta:
        unknown = EXCLUDE

    id = fields.UUID(required=True)
    name = fields.String(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    team = fields.List(fields.Nested(_Member), required=True)
    region = fields.String(load_default=None, allow_none=True)
    version = fields.Integer(required=True, strict=True)


_account = _Account()


def apply_account_event(uow: UnitOfWork, envelope: dict) -> None:
    """account.created / updated / deleted: the replica takes the account as it now is, unless it
    already holds a newer version of it (events of one account arrive in order on its partition,
    but a replayed or dead-letter-replayed one may be old)."""
    try:
        account = _account.load(((envelope.get("data") or {}).get("account")) or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope['type']}: {exc.messages}") from None
    row = uow.session.get(AccountReplica, account["id"], with_for_update=True)
    if row is not None and row.version > account["version"]:
        return
    row = row or AccountReplica(id=account["id"])
    row.name, row.owner_id, row.team_id = account["name"], account["owner_id"], account["team_id"]
    row.region = account["region"]
    row.deleted = envelope["type"] == "account.deleted"
    row.version, row.updated_at = account["version"], utcnow()
    uow.session.add(row)
    uow.session.flush()  # the account row first: its members refer to it
    uow.session.execute(delete(AccountMemberReplica).where(AccountMemberReplica.account_id == account["id"]))
    members = {m["user_id"]: m["role"] for m in account["team"]}  # one row per person
    uow.session.add_all(AccountMemberReplica(account_id=account["id"], user_id=user, role=role)
                        for user, role in members.items())


# crm.opportunities.v1, for the worker's consumer; the other events on that topic are not this service's.
ACCOUNT_HANDLERS = {(kind, 1): apply_account_event for kind in ACCOUNT_EVENTS}
