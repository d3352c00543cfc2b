"""Transactional outbox: events commit with the state change; a relay publishes them.

Writers (`OutboxWriter.add`) insert a row in the caller's transaction. On PostgreSQL they also
`pg_notify` the relay, which is transactional too: the relay wakes the moment the row commits.
On SQLite the relay watches `PRAGMA data_version`, which changes when another connection commits.

The relay publishes pending rows in id order with the idempotent producer, keyed by subject, and
marks them published only after Kafka acknowledged them. It never skips a row: it reads
"unpublished rows", not "rows after the last id", so a transaction that commits late is still sent.
Only one relay per service publishes at a time (a PostgreSQL advisory lock), so scaling the
worker out cannot reorder or double-send events.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import zlib

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Engine

from . import metrics
from .db import utcnow
from .events import encode, headers_for

log = logging.getLogger(__name__)


def _channel(service: str) -> str:
    return f"crm_outbox_{service}"


class OutboxWriter:
    def __init__(self, table, service: str):
        self.table = table
        self.service = service

    def add_many(self, session, events: list[tuple[str, dict]]) -> None:
        """Insert (topic, envelope) pairs in order, in the caller's transaction."""
        session.execute(self.table.insert(), [{
            "topic": topic,
            "message_key": envelope["subject"],
            "event_id": envelope["id"],
            "event_type": envelope["type"],
            "payload": encode(envelope),
            "headers": json.dumps([[k, v.decode()] for k, v in headers_for(envelope)]),
            "created_at": utcnow(),
        } for topic, envelope in events])
        for _, envelope in events:
            metrics.BUSINESS_EVENTS.labels(self.service, envelope["type"]).inc()
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("select pg_notify(:channel, '')"), {"channel": _channel(self.service)})

    def add(self, session, topic: str, envelope: dict) -> None:
        self.add_many(session, [(topic, envelope)])


NOTIFY_SLICE_SECONDS = 0.5


class _Waker:
    """Blocks until a commit may have added outbox rows, or the timeout passes."""

    def __init__(self, engine: Engine, service: str, in_process: threading.Event):
        self.engine = engine
        self.service = service
        self.in_process = in_process
        self._conn = None
        self._seen_version = None

    def open(self):
        if self.engine.dialect.name == "postgresql":
            import psycopg
            url = self.engine.url.set(drivername="postgresql")
            # Named, so operators (and tests) can find the connection that holds the leader lock.
            self._conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                                         application_name=f"crm-outbox-relay-{self.service}")
            self._conn.execute(f"LISTEN {_channel(self.service)}")
        else:
            self._conn = self.engine.raw_connection()

    def try_lead(self) -> bool:
        """Only one relay of a service publishes; the others wait as warm standbys."""
        if self.engine.dialect.name != "postgresql":
            return True
        key = zlib.crc32(_channel(self.service).encode())
        return bool(self._conn.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()[0])

    def before_read(self) -> None:
        """Called before each read of the outbox, so a commit landing during the pass still wakes us."""
        self.in_process.clear()
        if self.engine.dialect.name != "postgresql":
            self._seen_version = self._sqlite_version()

    def _sqlite_version(self) -> int:
        cur = self._conn.cursor()
        try:
            return cur.execute("PRAGMA data_version").fetchone()[0]
        finally:
            cur.close()

    def wait(self, timeout: float) -> None:
        if self.in_process.is_set():
            return
        if self.engine.dialect.name == "postgresql":
            # In slices, so that a stop (which sets in_process) is seen within half a second rather
            # than after the whole idle wait: a relay told to stop used to sit out its idle_wait.
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                for _ in self._conn.notifies(timeout=min(left, NOTIFY_SLICE_SECONDS), stop_after=1):
                    return
                if self.in_process.is_set():
                    return
            return
        # data_version is per connection and only moves for *other* connections' commits, which
        # is exactly what we want to see; our own process signals through in_process instead.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.in_process.wait(0.005) or self._sqlite_version() != self._seen_version:
                return

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                log.debug("closing the relay's wake-up connection failed", exc_info=True)
            self._conn = None


class OutboxRelay:
    def __init__(self, engine: Engine, table, producer, service: str, *, in_process_wake: threading.Event,
                 batch_size: int = 1000, retention_seconds: float = 24 * 3600):
        self.engine = engine
        self.table = table
        self.producer = producer
        self.service = service
        self.batch_size = batch_size
        self.retention_seconds = retention_seconds
        self.waker = _Waker(engine, service, in_process_wake)
        self._last_cleanup = 0.0

    def publish_pending(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        t = self.table
        self.waker.before_read()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.topic, t.c.message_key, t.c.payload, t.c.headers, t.c.created_at)
                .where(t.c.published_at.is_(None)).order_by(t.c.id).limit(self.batch_size)
            ).all()
        if not rows:
            return 0
        futures = []
        try:
            for row in rows:
                headers = [(k, v.encode()) for k, v in json.loads(row.headers)]
                futures.append((row, self.producer.send(row.topic, key=row.message_key.encode(),
                                                        value=bytes(row.payload), headers=headers)))
        except Exception as exc:  # noqa: BLE001 - e.g. no metadata while the broker is away
            log.warning("send failed after %d of %d rows: %r", len(futures), len(rows), exc)
        # Whatever was queued is delivered (or fails) before we decide what is published, so a
        # row is never both in flight and eligible for the next pass.
        self.producer.flush()
        sent, now = [], utcnow()
        for row, future in futures:
            try:
                future.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - left unpublished, retried on the next pass
                log.warning("publish failed; will retry", extra={"outbox_id": row.id, "error": repr(exc)})
                # Later rows of the same key must not overtake this one: stop at the first failure.
                break
            sent.append(row.id)
            metrics.EVENTS_PUBLISHED.labels(self.service, row.topic).inc()
            metrics.OUTBOX_PUBLISH_LATENCY.labels(self.service).observe((now - row.created_at).total_seconds())
        if sent:
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.id.in_(sent)).values(published_at=now))
        if len(sent) < len(rows):
            raise RuntimeError(f"{len(rows) - len(sent)} outbox rows not acknowledged by Kafka")
        return len(sent)

    def observe_backlog(self) -> None:
        t = self.table
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                select(func.count(), func.min(t.c.created_at)).where(t.c.published_at.is_(None))).one()
        metrics.OUTBOX_BACKLOG.labels(self.service).set(count)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=utcnow().tzinfo)
        metrics.OUTBOX_OLDEST_AGE.labels(self.service).set((utcnow() - oldest).total_seconds() if oldest else 0)

    def cleanup(self) -> None:
        """Published rows are kept a day for inspection, then deleted so the table stays small."""
        if time.monotonic() - self._last_cleanup < 300:
            return
        self._last_cleanup = time.monotonic()
        cutoff = utcnow() - dt.timedelta(seconds=self.retention_seconds)
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.published_at < cutoff))

    def run(self, stop: threading.Event, *, idle_wait: float = 1.0) -> None:
        """Publish until stopped. Kafka trouble: back off and retry the same rows. Trouble with the
        wake-up connection (which also holds the leader lock): reconnect and win the lock again
        before publishing anything more, so two relays never publish at once."""
        while not stop.is_set():
            try:
                self.waker.open()
                while not stop.is_set() and not self.waker.try_lead():
                    stop.wait(2.0)
                self._publish_while_leading(stop, idle_wait)
            except Exception:
                log.exception("outbox relay lost its database connection; reconnecting")
                stop.wait(1.0)
            finally:
                self.waker.close()

    def _publish_while_leading(self, stop: threading.Event, idle_wait: float) -> None:
        backoff, last_backlog = 0.1, 0.0
        while not stop.is_set():
            try:
                published = self.publish_pending()
                backoff = 0.1
                if time.monotonic() - last_backlog > 5:
                    self.observe_backlog()
                    last_backlog = time.monotonic()
                self.cleanup()
            except Exception:
                log.exception("outbox relay pass failed; retrying in %.1fs", backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if published < self.batch_size:
                self.waker.wait(idle_wait)  # raises when the wake-up connection is gone
