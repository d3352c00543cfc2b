"""The producers' event catalogs by topic, for checking what the services publish in the tests."""
from __future__ import annotations

from gateway.events import DIRECTORY
from services.leads.events import LEADS, MARKETING
from services.opportunities.events import OPPORTUNITIES

BY_TOPIC = {catalog.topic: catalog for catalog in (DIRECTORY, LEADS, OPPORTUNITIES, MARKETING)}


def problems(topic: str, envelope: dict) -> dict | None:
    """Why the envelope does not match its event's schema; None when it does, or when the topic is
    not one of the catalogs' (the kit's own tests publish on topics of their own)."""
    for name, catalog in BY_TOPIC.items():
        if topic == name or topic.endswith("." + name):
            if envelope.get("source") != catalog.source:
                return None  # a test playing another producer (e.g. a lead.converted built by hand)
            return catalog.problems(envelope)
    return None
