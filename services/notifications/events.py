"""What the notifications service publishes on Kafka (CONTRACT §5), one payload schema per event
type and version, and the topics it reads. What it reads of other services' events is in
inbound.py, through schemas of its own (services never import each other)."""
from __future__ import annotations

from marshmallow import fields, validate

from crmkit.eventschema import Catalog, Payload
from crmkit.settings import Settings

from . import SERVICE

NOTIFICATIONS_TOPIC = "crm.notifications.v1"
DIRECTORY_TOPIC = "crm.directory.v1"  # the replica: who manages which team, who is active
LEADS_TOPIC = "crm.leads.v1"  # assignments, follow-up dates, activities, handovers
OPPORTUNITIES_TOPIC = "crm.opportunities.v1"  # collisions, next contacts, closed deals, handovers
ORDERS_TOPIC = "crm.orders.v1"  # approvals, performance alerts, handovers

TOPIC_PARTITIONS = {NOTIFICATIONS_TOPIC: 3, DIRECTORY_TOPIC: 3, LEADS_TOPIC: 6, OPPORTUNITIES_TOPIC: 6,
                    ORDERS_TOPIC: 6}

Time = fields.AwareDateTime


class NotificationV1(Payload):
    """Who was told what. The title and body are written for the recipient alone (nothing they may
    not see is in them), so a consumer may show them to that person and to no one else."""
    id = fields.UUID(required=True)
    recipient_id = fields.String(required=True)
    type = fields.String(required=True)
    title = fields.String(required=True)
    link = fields.String(required=True, allow_none=True)
    record_type = fields.String(required=True, allow_none=True)
    record_id = fields.String(required=True, allow_none=True)
    created_at = Time(required=True)


class NotificationCreatedV1(Payload):
    notification = fields.Nested(NotificationV1, required=True)


class DeliveryFailedV1(Payload):
    delivery_id = fields.UUID(required=True)
    notification_id = fields.UUID(required=True)
    recipient_id = fields.String(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(["email", "webhook"]))
    attempts = fields.Integer(required=True)
    error = fields.String(required=True)


NOTIFICATIONS = Catalog(SERVICE, NOTIFICATIONS_TOPIC, "Notifications raised and deliveries that failed.",
                        partitions=TOPIC_PARTITIONS[NOTIFICATIONS_TOPIC])
NOTIFICATION_CREATED = NOTIFICATIONS.define(
    "notification.created", NotificationCreatedV1, subject="recipient id (a person's notifications stay in order)",
    summary="Someone was told something (in the app; e-mail follows by their preferences).")
DELIVERY_FAILED = NOTIFICATIONS.define(
    "delivery.failed", DeliveryFailedV1, subject="recipient id",
    summary="A notification could not be delivered on a channel after every retry.")


def event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return NOTIFICATIONS.event(settings, event_type, subject, data, actor=actor)
