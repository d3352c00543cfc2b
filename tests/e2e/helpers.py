from __future__ import annotations

import json
import uuid

from kafka import KafkaProducer

from crmkit.events import encode, headers_for, new_event


def marketing_event(i: int, **overrides) -> dict:
    data = {"external_id": f"mk-{i}", "source": "marketing", "campaign": "autumn-expo",
            "company": f"Company {i} Ltd.", "contact_name": f"Contact {i}", "email": f"c{i}@example.com",
            "phone": f"+86 138 {i:08d}", "region": "east", "industry": "manufacturing",
            "interest": "CNC lathes", "estimated_value": "50000.00", "occurred_at": "2026-11-20T09:00:00Z"}
    data.update(overrides)
    return new_event("marketing.lead.submitted", data["external_id"], data, source="marketing-hub")


def produce(bootstrap: str, topic: str, events, *, raw: list[bytes] = ()) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024)
    for event in events:
        producer.send(topic, key=event["subject"].encode(), value=encode(event), headers=headers_for(event))
    for value in raw:
        producer.send(topic, key=str(uuid.uuid4()).encode(), value=value)
    producer.flush()
    producer.close()


def envelopes(messages) -> list[dict]:
    return [json.loads(m.value) for m in messages]
