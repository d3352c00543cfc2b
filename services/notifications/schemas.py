"""The notifications API's request and response schemas (marshmallow; the OpenAPI document is
built from them)."""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo, available_timezones

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from crmkit.fields import Timestamp
from crmkit.pagination import PageArgsSchema

from .messages import LANGUAGES, TYPES, printable_ascii
from .preferences import CHANNELS

_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_ZONES = frozenset(available_timezones())


class NotificationSchema(Schema):
    id = fields.UUID()
    recipient_id = fields.String()
    type = fields.String(metadata={"enum": list(TYPES)})
    title = fields.String()
    body = fields.String()
    link = fields.String(allow_none=True, metadata={"description": "the record it is about, as an API path"})
    record_type = fields.String(allow_none=True)
    record_id = fields.String(allow_none=True)
    account_id = fields.UUID(allow_none=True)
    event_id = fields.String(allow_none=True, metadata={"description": "the event that raised it"})
    created_at = fields.DateTime()
    read_at = fields.DateTime(allow_none=True)


class NotificationPageSchema(Schema):
    items = fields.List(fields.Nested(NotificationSchema))
    next_cursor = fields.String(allow_none=True)
    unread_count = fields.Integer(metadata={"description": "the caller's unread notifications, all of them"})


class NotificationListArgsSchema(PageArgsSchema):
    class Meta:
        unknown = RAISE

    unread = fields.Boolean(metadata={"description": "true: unread only; false: read only"})
    type = fields.String(validate=validate.OneOf(TYPES))
    account_id = fields.UUID(metadata={"description": "those about this customer (the customer view)"})


class ReadAllArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    before = Timestamp(metadata={"description": "only those raised up to then (what the caller saw)"})


class ReadAllSchema(Schema):
    read = fields.Integer(metadata={"description": "how many were marked read"})


class AgendaArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    start = Timestamp(data_key="from", metadata={"description": "default: the start of the caller's day"})
    end = Timestamp(data_key="to", metadata={"description": "default: a day after `from`"})


MAX_AGENDA_DAYS = 62


class AgendaItemSchema(Schema):
    kind = fields.String(metadata={"enum": ["follow_up", "next_contact", "visit", "daily_report"]})
    record_type = fields.String(metadata={"enum": ["lead", "account", "opportunity", "visit", "daily_report"]})
    record_id = fields.String()
    title = fields.String()
    due_at = fields.DateTime()
    account_id = fields.UUID(allow_none=True)
    link = fields.String()


class AgendaApprovalSchema(Schema):
    approval_id = fields.UUID()
    order_id = fields.UUID()
    order_number = fields.String()
    level = fields.String(allow_none=True)
    waiting_since = fields.DateTime()
    link = fields.String()


class AgendaSchema(Schema):
    start = fields.DateTime(data_key="from")
    end = fields.DateTime(data_key="to")
    time_zone = fields.String(metadata={"description": "the caller's, in which the day was taken"})
    due = fields.List(fields.Nested(AgendaItemSchema), metadata={"description": "due in the window"})
    overdue = fields.List(fields.Nested(AgendaItemSchema), metadata={"description": "due before it, not worked"})
    approvals = fields.List(fields.Nested(AgendaApprovalSchema), metadata={"description": "waiting for the caller"})


class QuietHoursSchema(Schema):
    class Meta:
        unknown = RAISE

    start = fields.String(required=True, validate=validate.Regexp(_CLOCK), metadata={"example": "22:00"})
    end = fields.String(required=True, validate=validate.Regexp(_CLOCK), metadata={"example": "07:00"})

    @validates_schema
    def _not_empty(self, data, **_):
        if data["start"] == data["end"]:
            raise ValidationError("quiet hours must not start and end at the same time", "end")


class PreferencesWriteSchema(Schema):
    class Meta:
        unknown = RAISE

    email = fields.Email(allow_none=True, load_default=None, validate=validate.Length(max=320),
                         metadata={"description": "where e-mails go (none: no e-mail)"})
    language = fields.String(required=True, validate=validate.OneOf(LANGUAGES))
    time_zone = fields.String(required=True, validate=validate.Length(max=64), metadata={"example": "Asia/Shanghai"})
    channels = fields.Dict(keys=fields.String(validate=validate.OneOf(TYPES)),
                           values=fields.List(fields.String(validate=validate.OneOf(CHANNELS)),
                                              validate=validate.Length(max=len(CHANNELS))),
                           load_default=dict, metadata={"description": "per notification type, the channels "
                                                        "(types not named keep their defaults)"})
    quiet_hours = fields.Nested(QuietHoursSchema, allow_none=True, load_default=None,
                                metadata={"description": "no e-mail then (in your time zone); it waits until they end"})
    digest = fields.Boolean(load_default=False, metadata={"description": "no e-mail each time: the morning agenda "
                                                                        "e-mail only"})
    agenda_email = fields.Boolean(load_default=True, metadata={"description": "the agenda by e-mail each morning"})

    @validates("email")
    def _deliverable(self, value, **_):
        # Mail goes through a relay that may not take international addresses, and never to a
        # host of the CRM's own network: an ASCII address at a domain name.
        if value is None:
            return
        domain = value.rsplit("@", 1)[-1].lower()
        if not printable_ascii(value) or domain.startswith("[") or "." not in domain or domain.endswith(
                (".localhost", ".local", ".internal")) or domain == "localhost":
            raise ValidationError("an e-mail address at a public domain name, in ASCII")

    @validates("time_zone")
    def _zone(self, value, **_):
        if value not in _ZONES:
            raise ValidationError("not a time zone name (IANA, e.g. Asia/Shanghai)")
        ZoneInfo(value)


class PreferencesSchema(PreferencesWriteSchema):
    user_id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True, metadata={"description": "0 until first saved"})


class WebhookCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    url = fields.String(required=True, validate=validate.Length(min=8, max=2000),
                        metadata={"example": "https://hooks.example.com/crm"})
    events = fields.List(fields.String(validate=validate.OneOf(("*", *TYPES))), required=True,
                         validate=validate.Length(min=1, max=len(TYPES) + 1),
                         metadata={"description": "notification types to send, or [\"*\"] for all"})
    description = fields.String(validate=validate.Length(max=500), allow_none=True, load_default=None)


class WebhookDeliveryCountsSchema(Schema):
    pending = fields.Integer()
    sent = fields.Integer()
    failed = fields.Integer()
    cancelled = fields.Integer()


class WebhookSchema(Schema):
    id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String())
    description = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["active", "disabled"]})
    disabled_reason = fields.String(allow_none=True, metadata={"description": "why it was disabled (410, retries run out)"})
    created_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    deliveries = fields.Nested(WebhookDeliveryCountsSchema, metadata={"description": "on a single endpoint's read"})


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "whsec_...: shown this once; verify signatures with it"})


class WebhookPageSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema))
    next_cursor = fields.String(allow_none=True)


class WebhookSecretSchema(Schema):
    secret = fields.String(metadata={"description": "the new whsec_... secret, shown this once"})
    previous_valid_until = fields.DateTime(metadata={"description": "until then messages are signed with the old "
                                                                     "secret too"})
