"""What an activity is, the same on leads, accounts and opportunities (CONTRACT §4: "as for leads")."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from .fields import Text, Timestamp

ACTIVITY_KINDS = ("call", "visit", "email", "meeting", "demo", "note")


class ActivityCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(ACTIVITY_KINDS))
    summary = Text(4000, allow_none=True)
    occurred_at = Timestamp()
    next_contact_at = Timestamp(allow_none=True)


class ActivityFields(Schema):
    """The fields every activity renders; each service adds what it hangs on (lead_id, account_id...)."""

    id = fields.UUID()
    kind = fields.String()
    summary = fields.String(allow_none=True)
    occurred_at = fields.AwareDateTime()
    next_contact_at = fields.AwareDateTime(allow_none=True)
    created_by = fields.String()
    created_at = fields.AwareDateTime()
