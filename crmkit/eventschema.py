"""Event payloads as contracts of their own (CONTRACT §5): one marshmallow schema per event type and
version, apart from the HTTP representation, so renaming or adding an API field never changes what
a consumer reads, and publishing never pays for rendering an API response.

Each producer keeps a `Catalog` of what it publishes on its topic; `Catalog.event` dumps the data
through the event's schema into the envelope. docs/asyncapi.yaml is written from the catalogs
(`python -m tools.asyncapi`), and the tests check every event a service publishes against them."""
from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import RAISE, Schema, ValidationError, fields

from .events import new_event
from .settings import Settings


class Payload(Schema):
    """Base of every event payload schema: unknown fields are a producer's mistake."""

    class Meta:
        unknown = RAISE
        ordered = True


def Money(**kw) -> fields.Decimal:  # noqa: N802 - a field factory, named like the fields it makes
    """Money as a decimal string ("480000.00"): exact, and what every consumer parses the same way."""
    metadata = {"type": "string", "format": "decimal", "pattern": r"^-?[0-9]+(\.[0-9]{2})?$", "example": "480000.00",
                **kw.pop("metadata", {})}
    return fields.Decimal(as_string=True, places=2, metadata=metadata, **kw)


# Fields some roles may not see through the API (CONTRACT §2). Events go to services, not callers, so
# they carry them; a consumer that shows an event to a person (notifications, webhooks) must leave
# them out for these roles. Marked in docs/asyncapi.yaml as `x-hidden-from`.
HIDDEN_FROM_MARKETING = {"x-hidden-from": ["marketing"]}


@dataclass(frozen=True)
class EventType:
    type: str
    version: int
    schema: type[Schema]
    subject: str  # what the envelope's subject (the Kafka key) is
    summary: str

    @property
    def name(self) -> str:  # the message's name in docs/asyncapi.yaml
        return f"{self.type}.v{self.version}"


@dataclass
class Catalog:
    """The events one producer publishes on one topic."""
    source: str
    topic: str
    description: str
    partitions: int = 6
    events: dict[tuple[str, int], EventType] = field(default_factory=dict)
    _schemas: dict[tuple[str, int], Schema] = field(default_factory=dict, repr=False)

    def define(self, type: str, schema: type[Schema], *, subject: str, summary: str, version: int = 1) -> str:
        """Declare one event type and version; returns the type, for a module constant."""
        key = (type, version)
        if key in self.events:
            raise ValueError(f"{type} version {version} is defined twice")
        self.events[key] = EventType(type, version, schema, subject, summary)
        self._schemas[key] = schema()
        return type

    def event(self, settings: Settings, type: str, subject, data, *, actor, version: int = 1,
              correlation_id: str | None = None) -> tuple[str, dict]:
        """(topic, envelope) of one event, its data dumped through the event's payload schema."""
        try:
            schema = self._schemas[(type, version)]
        except KeyError:
            raise KeyError(f"{self.source} does not define {type} version {version}") from None
        return settings.topic(self.topic), new_event(type, subject, schema.dump(data), source=self.source,
                                                     actor=actor, version=version, correlation_id=correlation_id)

    def problems(self, envelope: dict) -> dict | None:
        """Why an envelope's data does not match its event's schema (None when it does); for tests
        and for the consumers of a service's own events."""
        schema = self._schemas.get((envelope["type"], envelope["version"]))
        if schema is None:
            return {"type": [f"{envelope['type']} version {envelope['version']} is not defined by {self.source}"]}
        try:
            schema.load(envelope["data"])
        except ValidationError as exc:
            return exc.messages
        return None
