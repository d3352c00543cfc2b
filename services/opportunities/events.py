"""What the opportunities service publishes and consumes on Kafka (CONTRACT §5)."""
from __future__ import annotations

from crmkit.events import new_event
from crmkit.settings import Settings

from . import SERVICE

OPPORTUNITIES_TOPIC = "crm.opportunities.v1"
LEADS_TOPIC = "crm.leads.v1"            # lead.converted creates accounts, contacts and opportunities
ORDERS_TOPIC = "crm.orders.v1"          # order.confirmed / order.paid keep account tiers current
DIRECTORY_TOPIC = "crm.directory.v1"    # the replica of users and teams, and handover requests

LEAD_CONVERTED = "lead.converted"
# Published when a lead.converted cannot be applied (the account is gone or not the owner's to sell
# into); the leads service rolls the lead back with the reason.
LEAD_CONVERSION_REJECTED = "lead.conversion_rejected"
REVENUE_EVENTS = frozenset({"order.confirmed", "order.paid"})
ORDER_CANCELLED = "order.cancelled"

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {OPPORTUNITIES_TOPIC: 6, LEADS_TOPIC: 6, ORDERS_TOPIC: 6, DIRECTORY_TOPIC: 3}


def event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return settings.topic(OPPORTUNITIES_TOPIC), new_event(event_type, subject, data, source=SERVICE, actor=actor)
