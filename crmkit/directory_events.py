"""The payloads of the directory's events (crm.directory.v1, published by the gateway and read by
every service's replica) and of handover.completed (each record-owning service's answer to
handover.requested, read by the gateway). Kept in the kit because producer and consumers must
agree on them; each is one event type's version 1 (crmkit.eventschema)."""
from __future__ import annotations

from marshmallow import fields, validate

from .auth import ROLES
from .eventschema import Payload

USER_EVENTS = ("user.created", "user.updated", "user.deactivated")
TEAM_EVENTS = ("team.created", "team.updated")
HANDOVER_REQUESTED = "handover.requested"
HANDOVER_COMPLETED = "handover.completed"


class DirectoryUserV1(Payload):
    """A user as every replica keeps them. Never the password hash."""
    id = fields.String(required=True)
    username = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    team_id = fields.String(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)
    active = fields.Boolean(required=True)
    token_version = fields.Integer(required=True, metadata={
        "description": "services refuse tokens whose `ver` claim is not this"})


class UserEventV1(Payload):
    user = fields.Nested(DirectoryUserV1, required=True)


class DirectoryTeamV1(Payload):
    id = fields.String(required=True)
    name = fields.String(required=True)
    manager_id = fields.String(required=True, allow_none=True)
    parent_team_id = fields.String(required=True, allow_none=True)
    region = fields.String(required=True, allow_none=True)


class TeamEventV1(Payload):
    team = fields.Nested(DirectoryTeamV1, required=True)


class HandoverRequestedV1(Payload):
    handover_id = fields.String(required=True)
    from_user_id = fields.String(required=True, metadata={"description": "the leaver (also the event's subject)"})
    to_user_id = fields.String(required=True)


class HandoverCompletedV1(Payload):
    """A service's answer to handover.requested: `failed` (nothing moved) when the successor was no
    longer active by the time the service got to it (docs/handover.md)."""
    handover_id = fields.String(required=True)
    service = fields.String(required=True)
    moved = fields.Integer(required=True, metadata={"description": "records moved to the successor"})
    from_user_id = fields.String(required=True)
    to_user_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["completed", "failed"]))
    failure = fields.String(required=True, allow_none=True)
