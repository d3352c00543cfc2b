"""Idempotent Kafka consumer with bounded retries and a dead-letter topic.

For each polled batch:
  1. the effects of all its events and their ids (in `processed_events`) commit in ONE transaction;
  2. only then are the offsets committed to Kafka.
A crash between 1 and 2 redelivers the batch, and the processed ids turn the replay into a no-op.

If anything in the batch fails, the batch is rolled back and replayed one event at a time, so a
poison message is isolated: it is retried `max_attempts` times, then its original bytes go to
`<topic>.dlq` with the reason in headers (CONTRACT §5), and the consumer moves on. Events a
handler rejects as permanently invalid (`Reject`) skip the retries. When the database itself is
unreachable nothing is dead-lettered: the consumer waits for it, since no message is at fault.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka.errors import CommitFailedError, KafkaError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError

from . import metrics
from .db import Database, UnitOfWork, utcnow
from .events import BadEnvelope, parse_envelope
from .logging import request_id_var

log = logging.getLogger(__name__)


class Reject(Exception):
    """The event can never be applied (invalid data, unknown version): dead-letter it at once."""


Handler = Callable[[UnitOfWork, dict], None]


@dataclass(frozen=True)
class Dispatch:
    """One topic's dispatch table: (event type, version) -> handler(uow, envelope).

    A known type in a version missing from the table is dead-lettered with the reason. Types not in
    the table are skipped unparsed (the topics are shared: the gateway reads crm.leads.v1 for
    handover.completed alone), unless `others_rejected`, for a topic where anything else is a
    producer's mistake (the marketing intake): those are dead-lettered too."""
    table: dict[tuple[str, int], Handler]
    others_rejected: bool = False

    @property
    def types(self) -> frozenset[str]:
        return frozenset(kind for kind, _version in self.table)

    def handler_for(self, envelope: dict) -> Handler:
        kind, version = envelope["type"], envelope["version"]
        handler = self.table.get((kind, version))
        if handler is not None:
            return handler
        known = sorted(v for k, v in self.table if k == kind)
        if known:
            raise Reject(f"unsupported version {version} of {kind} (this consumer reads version "
                         f"{', '.join(map(str, known))})")
        raise Reject(f"unexpected event type {kind!r} on this topic")


class ConsumerStalled(RuntimeError):
    """Messages are waiting but none arrived for too long, or the group was never joined: replace
    the Kafka client (or, with no way to make one, give up) rather than sit there."""


class _BatchFailed(Exception):
    def __init__(self, event_id: str, cause: BaseException):
        super().__init__(repr(cause))
        self.event_id = event_id
        self.cause = cause


def _is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


class IdempotentConsumer:
    def __init__(self, *, db: Database, processed_table, consumer, producer, service: str, group_id: str,
                 handlers: dict[str, Dispatch | Handler], max_attempts: int = 3, retry_backoff: float = 0.2,
                 dlq_timeout: float = 30.0, stall_after: float = 60.0, lag_interval: float = 10.0,
                 prepare: dict[str, Callable[[UnitOfWork, list[dict]], None]] | None = None,
                 event_types: dict[str, frozenset[str]] | None = None,
                 reconnect: Callable[[], object] | None = None, join_within: float = 20.0):
        self.db = db
        self.processed = processed_table
        self.consumer = consumer
        self.producer = producer
        self.service = service
        self.group_id = group_id
        self.handlers = handlers
        # Optional per topic: prepare(uow, envelopes) runs once before a batch's handlers, in the same
        # transaction (e.g. to look up all of a batch's duplicates in one query).
        self.prepare = prepare or {}
        # Optional per topic: the only event types this consumer cares about. Others on a busy topic
        # (the gateway reads crm.leads.v1 for handover.completed alone) are skipped unparsed and
        # leave no processed_events row.
        self.event_types = dict(event_types or {})
        for topic, dispatch in handlers.items():
            if isinstance(dispatch, Dispatch) and not dispatch.others_rejected:
                self.event_types.setdefault(topic, dispatch.types)
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.dlq_timeout = dlq_timeout
        self.stall_after = stall_after
        self.lag_interval = lag_interval
        self._last_lag = 0.0
        self._last_progress = time.monotonic()
        # reconnect() makes a new Kafka client (crmkit.kafka.make_consumer): a stalled one is closed
        # and replaced in the process, which works with no orchestrator to restart the worker.
        self.reconnect = reconnect
        self.join_within = join_within
        self._client_since = time.monotonic()

    # ---- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, poll_timeout_ms: int = 500) -> None:
        while not stop.is_set():
            try:
                polled = self.consumer.poll(timeout_ms=poll_timeout_ms)
            except KafkaError as exc:
                # The broker is away (a restart, an outage) while the client looks for its group
                # coordinator: nothing was consumed, so wait and poll again. A worker that died here
                # would stop its outbox relay too, and with no orchestrator (make run, the tests)
                # nothing it accepted would be published. ConsumerStalled still ends a consumer that
                # stays stuck with messages waiting.
                log.warning("polling %s failed (%r); retrying", self.group_id, exc)
                stop.wait(1.0)
                polled = {}
            messages = [m for batch in polled.values() for m in batch]
            if messages:
                self.process(messages, stop)
                self._commit_offsets(polled)
                self._last_progress = time.monotonic()
            try:
                self._check_joined()
                self._observe_lag()
            except ConsumerStalled as stalled:
                if self.reconnect is None:
                    raise
                self._replace_client(stalled)

    def _check_joined(self) -> None:
        """kafka-python 3.0.12 can be left spinning outside its group: a rebalance right after the first
        join (the metadata of topics another worker has just created changes) sometimes never ends,
        and the broker drops the member (its LeaveGroup then fails with UnknownMemberId). Seen in
        two of the e2e stacks of one full test run, and behind two CI failures. A rebalance of our
        groups takes well under a second, so a client out of its group for `join_within` seconds,
        since it was made or since a rebalance took its partitions, is replaced."""
        membership = getattr(self.consumer, "crm_membership", None)
        if membership is None or membership.joined.is_set():
            return
        out_for = time.monotonic() - membership.out_since  # since the client was made, or the last revocation
        if out_for > self.join_within:
            raise ConsumerStalled(f"group {self.group_id} not joined for {out_for:.0f}s")

    def _replace_client(self, stalled: ConsumerStalled) -> None:
        """Close the stuck client without committing (what was applied is committed in our database;
        a replay is a no-op) and carry on with a new one."""
        log.error("consumer %s stalled (%s); replacing its Kafka client", self.group_id, stalled)
        metrics.CONSUMER_RESTARTS.labels(self.service, self.group_id).inc()
        try:
            self.consumer.close(autocommit=False)
        except Exception:
            log.warning("closing the stalled client of %s failed", self.group_id, exc_info=True)
        self.consumer = self.reconnect()
        self._client_since = self._last_progress = time.monotonic()

    def _commit_offsets(self, polled) -> None:
        from kafka.structs import OffsetAndMetadata
        offsets = {tp: OffsetAndMetadata(batch[-1].offset + 1, "", -1) for tp, batch in polled.items() if batch}
        try:
            self.consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced under us; the new owner replays and the processed ids dedupe it.
            log.warning("offset commit failed after rebalance; events will be replayed idempotently")
        except KafkaError as exc:
            # The coordinator is away (broker restart). The effects are committed in our database;
            # the next successful commit covers these offsets, and a replay meanwhile is a no-op.
            log.warning("offset commit failed (%r); will be covered by the next commit", exc)

    def _observe_lag(self) -> None:
        """Export lag per topic, and give up (ConsumerStalled) when there is lag but no progress:
        the last line of defence against a client that stops fetching (see crmkit.kafka)."""
        if time.monotonic() - self._last_lag < self.lag_interval:
            return
        self._last_lag = time.monotonic()
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        try:
            ends = self.consumer.end_offsets(assigned)
        except Exception:  # noqa: BLE001 - lag is best effort; the broker may be restarting
            return
        per_topic: dict[str, int] = {}
        for tp in assigned:
            # Bounded: without a timeout, position() can block on an unresolved offset for ever.
            try:
                position = self.consumer.position(tp, timeout_ms=1000)
            except KafkaError:
                position = None
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends.get(tp, 0) - (position or 0))
        for topic, lag in per_topic.items():
            metrics.CONSUMER_LAG.labels(self.service, self.group_id, topic).set(lag)
        if not any(per_topic.values()):
            self._last_progress = time.monotonic()
        elif time.monotonic() - self._last_progress > self.stall_after:
            raise ConsumerStalled(f"{sum(per_topic.values())} messages waiting on {sorted(per_topic)} "
                                  f"and none consumed for {self.stall_after:.0f}s")

    # ---- one batch --------------------------------------------------------------------------
    def _wanted(self, msg, envelope: dict | None = None) -> bool:
        wanted = self.event_types.get(msg.topic)
        if wanted is None:
            return True
        if envelope is not None:
            return envelope["type"] in wanted
        header = next((v for k, v in (msg.headers or []) if k == "type"), None)
        return header is None or header.decode("utf-8", "replace") in wanted  # no header: decide once parsed

    def process(self, messages: list, stop: threading.Event | None = None) -> None:
        parsed = []
        for msg in messages:
            if not self._wanted(msg):
                metrics.EVENTS_CONSUMED.labels(self.service, msg.topic, "ignored").inc()
                continue
            try:
                envelope = parse_envelope(msg.value)
            except BadEnvelope as exc:
                self._dead_letter(msg, exc, attempts=1)
                continue
            if self._wanted(msg, envelope):
                parsed.append((msg, envelope))
        if not parsed:
            return
        failed_id = None
        while True:
            try:
                self._apply_batch(parsed)
                return
            except Exception as exc:
                cause = exc.cause if isinstance(exc, _BatchFailed) else exc
                if _is_infrastructure(cause):
                    log.warning("database unavailable; pausing consumer: %r", cause)
                    self._sleep(stop, 1.0)
                    if stop is not None and stop.is_set():
                        raise
                    continue
                failed_id = exc.event_id if isinstance(exc, _BatchFailed) else None
                log.info("batch of %d failed (%r); retrying one event at a time", len(parsed), cause)
                break
        for msg, envelope in parsed:
            # The batch pass was the failing event's first attempt.
            self._apply_one_with_retries(msg, envelope, stop, used=1 if envelope["id"] == failed_id else 0)

    def _already_processed(self, uow: UnitOfWork, event_ids: list[str]) -> set[str]:
        p = self.processed
        rows = uow.session.execute(
            select(p.c.event_id).where(p.c.consumer == self.group_id, p.c.event_id.in_(event_ids))).scalars()
        return set(rows)

    def _apply(self, uow: UnitOfWork, msg, envelope: dict, seen: set[str], processed: list[dict]) -> str:
        if envelope["id"] in seen:
            return "replay"
        handler = self.handlers.get(msg.topic)
        if handler is None:
            raise Reject(f"no handler for topic {msg.topic}")
        if isinstance(handler, Dispatch):
            handler = handler.handler_for(envelope)
        token = request_id_var.set(envelope.get("correlation_id"))
        try:
            handler(uow, envelope)
        finally:
            request_id_var.reset(token)
        processed.append({"consumer": self.group_id, "event_id": envelope["id"], "topic": msg.topic,
                          "processed_at": utcnow()})
        seen.add(envelope["id"])
        return "applied"

    def _commit(self, uow: UnitOfWork, processed: list[dict]) -> None:
        if processed:
            uow.session.execute(self.processed.insert(), processed)
        uow.commit()

    def _apply_batch(self, parsed) -> None:
        outcomes, processed = [], []
        with self.db.uow() as uow:
            seen = self._already_processed(uow, [env["id"] for _, env in parsed])
            fresh: dict[str, list[dict]] = {}
            for msg, envelope in parsed:
                if envelope["id"] not in seen:
                    fresh.setdefault(msg.topic, []).append(envelope)
            for topic, envelopes in fresh.items():
                if topic in self.prepare:
                    self.prepare[topic](uow, envelopes)
            for msg, envelope in parsed:
                try:
                    outcomes.append((msg.topic, self._apply(uow, msg, envelope, seen, processed)))
                except Exception as exc:
                    raise _BatchFailed(envelope["id"], exc) from exc
            self._commit(uow, processed)
        for topic, outcome in outcomes:
            metrics.EVENTS_CONSUMED.labels(self.service, topic, outcome).inc()

    def _apply_one_with_retries(self, msg, envelope: dict, stop, used: int = 0) -> None:
        attempts = used
        while True:
            attempts += 1
            try:
                with self.db.uow() as uow:
                    processed: list[dict] = []
                    outcome = self._apply(uow, msg, envelope, self._already_processed(uow, [envelope["id"]]),
                                          processed)
                    self._commit(uow, processed)
                metrics.EVENTS_CONSUMED.labels(self.service, msg.topic, outcome).inc()
                return
            except Reject as exc:
                metrics.EVENTS_FAILED.labels(self.service, msg.topic).inc()
                self._dead_letter(msg, exc, attempts)
                return
            except Exception as exc:
                if _is_infrastructure(exc):
                    attempts -= 1  # not the message's fault
                    self._sleep(stop, 1.0)
                    if stop is not None and stop.is_set():
                        raise
                    continue
                metrics.EVENTS_FAILED.labels(self.service, msg.topic).inc()
                if attempts >= self.max_attempts:
                    log.exception("event %s failed %d times; dead-lettering", envelope.get("id"), attempts)
                    self._dead_letter(msg, exc, attempts)
                    return
                self._sleep(stop, self.retry_backoff * attempts)

    @staticmethod
    def _sleep(stop, seconds: float) -> None:
        if stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

    # ---- dead letters -----------------------------------------------------------------------
    def _dead_letter(self, msg, exc: BaseException, attempts: int) -> None:
        reason = str(exc) or type(exc).__name__
        headers = list(msg.headers or []) + [
            ("error", reason[:4000].encode()),
            ("error_type", type(exc).__name__.encode()),
            ("original_topic", msg.topic.encode()),
            ("original_partition", str(msg.partition).encode()),
            ("original_offset", str(msg.offset).encode()),
            ("failed_at", utcnow().isoformat().encode()),
            ("attempts", str(attempts).encode()),
            ("consumer_group", self.group_id.encode()),
        ]
        # Synchronous on purpose: the offset may move past this message only once the DLQ has it.
        self.producer.send(f"{msg.topic}.dlq", key=msg.key, value=msg.value, headers=headers).get(
            timeout=self.dlq_timeout)
        metrics.EVENTS_DEAD_LETTERED.labels(self.service, msg.topic).inc()
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)

