"""The producers' event catalogs by topic, for checking what the services publish in the tests: each
event's data must load through its marshmallow payload schema AND validate against the JSON Schema
that docs/asyncapi.yaml publishes for it (what an outside consumer checks)."""
from __future__ import annotations

import functools

from jsonschema import Draft202012Validator

from gateway.events import DIRECTORY
from services.leads.events import LEADS, MARKETING
from services.notifications.events import NOTIFICATIONS
from services.opportunities.events import OPPORTUNITIES
from services.orders.events import ORDERS

BY_TOPIC = {catalog.topic: catalog for catalog in (DIRECTORY, LEADS, OPPORTUNITIES, ORDERS, NOTIFICATIONS, MARKETING)}


@functools.cache
def _published_schemas() -> dict:
    from tools.asyncapi import CATALOGS, _payload_schemas

    return _payload_schemas(CATALOGS)


@functools.cache
def _validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                 "components": {"schemas": _published_schemas()}})


def problems(topic: str, envelope: dict) -> dict | None:
    """Why the envelope does not match its event's schemas; None when it does, or when the topic is
    not one of the catalogs' (the kit's own tests publish on topics of their own)."""
    for name, catalog in BY_TOPIC.items():
        if topic == name or topic.endswith("." + name):
            if envelope.get("source") != catalog.source:
                return None  # a test playing another producer (e.g. a lead.converted built by hand)
            found = catalog.problems(envelope)
            if found:
                return found
            kind = catalog.events[(envelope["type"], envelope["version"])]
            errors = [f"{'/'.join(map(str, e.path))}: {e.message[:200]}"
                      for e in _validator(kind.schema.__name__).iter_errors(envelope["data"])]
            return {"published JSON Schema": errors} if errors else None
    return None
