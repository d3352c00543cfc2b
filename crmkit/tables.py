"""Tables every service keeps next to its own: outbox, processed events, idempotency keys.

`add_kit_tables(metadata)` puts them in the service's metadata so its Alembic migrations own them.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text

from .db import UTCDateTime

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real bigint identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")


def add_kit_tables(metadata: MetaData) -> dict[str, Table]:
    outbox = Table(
        "outbox", metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("topic", String(200), nullable=False),
        Column("message_key", String(200), nullable=False),
        Column("event_id", String(100), nullable=False, unique=True),
        Column("event_type", String(100), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("published_at", UTCDateTime, nullable=True),
    )
    # The relay's only query: unpublished rows in id order. A partial index keeps it tiny.
    Index("ix_outbox_pending", outbox.c.id, sqlite_where=outbox.c.published_at.is_(None),
          postgresql_where=outbox.c.published_at.is_(None))
    Index("ix_outbox_published_at", outbox.c.published_at)
    processed = Table(
        "processed_events", metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(100), primary_key=True),
        Column("topic", String(200), nullable=False),
        Column("processed_at", UTCDateTime, nullable=False),
    )
    Index("ix_processed_events_processed_at", processed.c.processed_at)
    idempotency = Table(
        "idempotency_keys", metadata,
        Column("principal", String(100), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("fingerprint", String(64), nullable=False),
        Column("state", String(20), nullable=False),  # in_progress | done
        Column("status_code", Integer, nullable=True),
        Column("response_body", LargeBinary, nullable=True),
        Column("response_headers", Text, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
    )
    return {"outbox": outbox, "processed_events": processed, "idempotency_keys": idempotency}
