"""The gateway's request and response bodies (marshmallow; documented in /openapi.json)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from crmkit.auth import ROLES
from crmkit.fields import Flag, QueryFlag, Text
from crmkit.pagination import PageArgsSchema

from .domain import MIN_PASSWORD_LENGTH

USERNAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$",
                           error="2-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")


def _password(**kwargs):
    return fields.String(load_only=True, validate=validate.Length(min=MIN_PASSWORD_LENGTH, max=256), **kwargs)


class TokenRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    username = Text(64, min_length=1, required=True)
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=256))


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class UserSchema(Schema):
    id = fields.UUID(dump_only=True)
    username = fields.String(required=True, validate=USERNAME)
    password = _password(required=True)
    name = Text(200, min_length=1, required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    team_id = fields.UUID(allow_none=True, load_default=None)
    region = Text(100, allow_none=True, load_default=None)
    active = Flag(load_default=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    version = fields.Integer(dump_only=True)

    class Meta:
        unknown = RAISE
        ordered = True


class UserPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    password = _password()
    name = Text(200, min_length=1)
    role = fields.String(validate=validate.OneOf(ROLES))
    team_id = fields.UUID(allow_none=True)
    region = Text(100, allow_none=True)
    active = Flag()

    @validates("name")
    def _not_blank(self, value, **_):
        if not value.strip():
            raise ValidationError("must not be blank")


class UserListArgsSchema(PageArgsSchema):
    role = fields.String(validate=validate.OneOf(ROLES))
    team_id = fields.UUID()
    region = Text(100)
    active = QueryFlag()
    q = Text(100)


class UserPageSchema(Schema):
    items = fields.List(fields.Nested(UserSchema))
    next_cursor = fields.String(allow_none=True)


class TeamSchema(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    id = fields.UUID(dump_only=True)
    name = Text(200, min_length=1, required=True)
    manager_id = fields.UUID(allow_none=True, load_default=None)
    parent_team_id = fields.UUID(allow_none=True, load_default=None)
    region = Text(100, allow_none=True, load_default=None)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    version = fields.Integer(dump_only=True)


class TeamPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Text(200, min_length=1)
    manager_id = fields.UUID(allow_none=True)
    parent_team_id = fields.UUID(allow_none=True)
    region = Text(100, allow_none=True)


class TeamPageSchema(Schema):
    items = fields.List(fields.Nested(TeamSchema))
    next_cursor = fields.String(allow_none=True)


class MeSchema(Schema):
    id = fields.String()
    username = fields.String(allow_none=True)
    name = fields.String()
    role = fields.String()
    team_id = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    teams = fields.List(fields.String())
    manages = fields.List(fields.String())


class HandoverRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    to_user_id = fields.UUID(required=True)


class HandoverAcceptedSchema(Schema):
    handover_id = fields.UUID(required=True)


class HandoverSchema(Schema):
    id = fields.UUID()
    from_user_id = fields.UUID()
    to_user_id = fields.UUID()
    status = fields.String(metadata={"description": "pending until every service that owns records has answered; "
                                                    "then completed, or failed when one could not move them "
                                                    "(its failure is in services)"})
    services = fields.Dict(keys=fields.String(), values=fields.Dict(),
                           metadata={"description": 'per service: {"moved": n, "at": time}'})
    waiting_for = fields.List(fields.String())
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class FunnelSchema(Schema):
    period = fields.String()
    leads = fields.Integer(allow_none=True)
    qualified = fields.Integer(allow_none=True)
    opportunities = fields.Integer(allow_none=True)
    won = fields.Integer(allow_none=True)
    conversion = fields.Dict(keys=fields.String(), values=fields.Float(allow_none=True),
                             metadata={"description": "lead_to_qualified, qualified_to_opportunity, "
                                                      "opportunity_to_won, lead_to_won (null when unknown)"})
    degraded = fields.List(fields.String())


class CustomerSchema(Schema):
    """Each part as its service rendered it for the caller; a part is null when its service is down."""

    account_id = fields.UUID()
    account = fields.Dict(allow_none=True)
    contacts = fields.List(fields.Dict(), allow_none=True)
    opportunities = fields.Dict(keys=fields.String(), values=fields.List(fields.Dict()), allow_none=True,
                                metadata={"description": '{"open": [...], "closed": [...]}'})
    orders = fields.List(fields.Dict(), allow_none=True)
    leads = fields.List(fields.Dict(), allow_none=True)
    activities = fields.List(fields.Dict(), allow_none=True)
    notifications = fields.List(fields.Dict(), allow_none=True)
    degraded = fields.List(fields.String())
