"""What the leads service publishes and consumes on Kafka (CONTRACT §5)."""
from __future__ import annotations

from crmkit.events import new_event
from crmkit.settings import Settings

from . import SERVICE
from .schemas import lead_schema

LEADS_TOPIC = "crm.leads.v1"
MARKETING_INBOUND_TOPIC = "marketing.leads.inbound.v1"
DIRECTORY_TOPIC = "crm.directory.v1"  # the gateway's; the leads service keeps a replica of users and teams
OPPORTUNITIES_TOPIC = "crm.opportunities.v1"  # the opportunities service's refusals of conversions
LEAD_CONVERSION_REJECTED = "lead.conversion_rejected"

# Partitions bound how many worker replicas can consume in parallel (see docs/operations).
TOPIC_PARTITIONS = {LEADS_TOPIC: 6, MARKETING_INBOUND_TOPIC: 6, DIRECTORY_TOPIC: 3, OPPORTUNITIES_TOPIC: 6}


def lead_event(settings: Settings, event_type: str, lead, *, actor, extra: dict | None = None) -> tuple[str, dict]:
    data = {"lead": lead_schema.dump(lead)}
    if extra:
        data.update(extra)
    return settings.topic(LEADS_TOPIC), new_event(event_type, lead.id, data, source=SERVICE, actor=actor)
