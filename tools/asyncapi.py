"""Writes docs/asyncapi.yaml (AsyncAPI 3.0) from the event catalogs in the code (crmkit.eventschema):
every topic, every event type and version with its key (the envelope's subject), headers, envelope
and payload schema, and which service sends and which receives it.

`python -m tools.asyncapi` rewrites the file; `--check` fails if it is not current (a test runs it),
so the document cannot drift from what the services publish."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from crmkit.eventschema import Catalog, EventType
from gateway.events import DIRECTORY
from services.leads.events import LEADS, MARKETING
from services.notifications.events import NOTIFICATIONS
from services.notifications.raisers import leads_handlers, opportunities_handlers, orders_handlers
from services.opportunities.events import OPPORTUNITIES
from services.orders.events import ORDERS

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "asyncapi.yaml"

# Who reads what (the producers are the catalogs' sources). Kept here, beside the catalogs, and
# checked against the workers' dispatch tables by tests/unit/test_event_contracts.py.
RECEIVERS = {
    ("crm.directory.v1", "*"): ["leads", "opportunities", "orders"],
    ("crm.leads.v1", "lead.converted"): ["opportunities"],
    ("crm.leads.v1", "handover.completed"): ["gateway"],
    ("crm.opportunities.v1", "lead.conversion_rejected"): ["leads"],
    ("crm.opportunities.v1", "handover.completed"): ["gateway"],
    ("crm.opportunities.v1", "account.created"): ["orders"],  # the replica; new accounts count
    ("crm.opportunities.v1", "activity.logged"): ["orders"],  # activities count toward performance
    ("crm.leads.v1", "activity.logged"): ["orders"],
    ("crm.opportunities.v1", "account.updated"): ["orders"],
    ("crm.opportunities.v1", "account.deleted"): ["orders"],
    ("crm.opportunities.v1", "opportunity.won"): ["orders"],
    ("crm.orders.v1", "order.confirmed"): ["opportunities", "orders"],  # tiers; performance
    ("crm.orders.v1", "order.paid"): ["opportunities"],
    ("crm.orders.v1", "order.cancelled"): ["opportunities", "orders"],
    ("crm.orders.v1", "order.submitted"): ["orders"],
    ("crm.orders.v1", "order.payment_recorded"): ["orders"],
    ("crm.orders.v1", "handover.completed"): ["gateway"],
    ("marketing.leads.inbound.v1", "*"): ["leads"],
}
# The notifications service reads what raises a notification or moves a reminder (its raisers' tables).
for _topic, _table in (("crm.leads.v1", leads_handlers), ("crm.opportunities.v1", opportunities_handlers),
                       ("crm.orders.v1", orders_handlers)):
    for _kind, _version in _table(None):
        RECEIVERS[(_topic, _kind)] = sorted({*RECEIVERS.get((_topic, _kind), []), "notifications"})
RECEIVERS[("crm.directory.v1", "*")].append("notifications")
CATALOGS: list[Catalog] = [DIRECTORY, LEADS, OPPORTUNITIES, ORDERS, NOTIFICATIONS, MARKETING]

ENVELOPE = {
    "type": "object",
    "description": "CONTRACT §5: every event is one envelope; `data` is the event's payload.",
    "required": ["id", "type", "version", "source", "time", "subject", "data"],
    "properties": {
        "id": {"type": "string", "description": "unique; consumers are idempotent by it"},
        "type": {"type": "string"},
        "version": {"type": "integer", "minimum": 1, "description": "of the payload; consumers dead-letter "
                    "versions they do not know"},
        "source": {"type": "string", "description": "the producing service"},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string", "description": "the aggregate id, also the Kafka key"},
        "actor": {"type": ["string", "null"], "description": "the user whose action caused it"},
        "correlation_id": {"type": ["string", "null"]},
        "data": {"type": "object"},
    },
}
HEADERS = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "the event type, so a consumer can skip others unparsed"},
        "correlation_id": {"type": "string"},
        "X-Request-ID": {"type": "string"},
    },
}


def _payload_schemas(catalogs: list[Catalog]) -> dict:
    """Each event's payload schema as JSON Schema, through apispec's marshmallow converter (the one
    that writes the OpenAPI document), named after the schema class."""
    spec = APISpec(title="events", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()])
    seen: dict[str, type] = {}
    for catalog in catalogs:
        for kind in catalog.events.values():
            name = kind.schema.__name__
            if seen.setdefault(name, kind.schema) is not kind.schema:
                raise ValueError(f"two payload schemas are called {name}")
            if name not in spec.components.schemas:
                spec.components.schema(name, schema=kind.schema)
    return spec.to_dict()["components"]["schemas"]


def message_id(catalog: Catalog, kind: EventType) -> str:
    """Unique across topics: activity.logged and handover.completed have a payload per producer."""
    return f"{catalog.source}-{kind.name}".replace(".", "-")


def _message(catalog: Catalog, kind: EventType) -> dict:
    envelope = {**ENVELOPE, "properties": {
        **ENVELOPE["properties"],
        "type": {"type": "string", "const": kind.type},
        "version": {"type": "integer", "const": kind.version},
        "source": {"type": "string", "const": catalog.source},
        "data": {"$ref": f"#/components/schemas/{kind.schema.__name__}"}}}
    return {"name": kind.name, "title": f"{kind.type} (version {kind.version})", "summary": kind.summary,
            "contentType": "application/json",
            "headers": HEADERS,
            "bindings": {"kafka": {"key": {"type": "string", "description": f"the subject: {kind.subject}"}}},
            "payload": envelope}


def _receivers(topic: str, kind: str) -> list[str]:
    return RECEIVERS.get((topic, kind)) or RECEIVERS.get((topic, "*")) or []


def document() -> dict:
    channels, operations, messages = {}, {}, {}
    for catalog in CATALOGS:
        channel = catalog.topic.replace(".", "-")
        channels[channel] = {
            "address": catalog.topic, "description": catalog.description,
            "messages": {message_id(catalog, k): {"$ref": f"#/components/messages/{message_id(catalog, k)}"}
                         for k in catalog.events.values()},
            "bindings": {"kafka": {"topic": catalog.topic, "partitions": catalog.partitions}},
        }
        for kind in catalog.events.values():
            mid = message_id(catalog, kind)
            messages[mid] = _message(catalog, kind)
            operations[f"send-{mid}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{channel}"},
                "summary": f"{catalog.source} publishes {kind.type}",
                "messages": [{"$ref": f"#/channels/{channel}/messages/{mid}"}]}
            for receiver in _receivers(catalog.topic, kind.type):
                operations[f"{receiver}-receives-{mid}"] = {
                    "action": "receive", "channel": {"$ref": f"#/channels/{channel}"},
                    "summary": f"{receiver} consumes {kind.type}",
                    "messages": [{"$ref": f"#/channels/{channel}/messages/{mid}"}]}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "SFA CRM events", "version": "1.0.0", "description": (
            "What the services publish and consume on Kafka (CONTRACT §5). Written by "
            "`python -m tools.asyncapi` from the payload schemas in each service's events.py; do not edit. "
            "Delivery is at least once; consumers are idempotent by the envelope's id. A consumer "
            "dead-letters (to `<topic>.dlq`, the reason in the `error` header) a known type in a version "
            "it does not read, and data that does not match the payload schema.")},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _payload_schemas(CATALOGS)},
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:  # a shared dict is written out each time, never as &id/*id
        return True


def render() -> str:
    return yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/asyncapi.yaml is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            sys.exit("docs/asyncapi.yaml is stale: run `python -m tools.asyncapi`")
        return
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
