"""The process around a service's consumers and its outbox relay.

One worker process per service runs: the outbox relay (a thread), each idempotent consumer
(a thread each), and a /metrics + /healthz server. SIGTERM stops all of them cleanly; SIGKILL
loses nothing, since every effect and every offset is committed only after the database.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .consumer import Dispatch, IdempotentConsumer
from .db import Database
from .kafka import ensure_topics, make_consumer, make_producer
from .metrics import serve_metrics
from .outbox import OutboxRelay
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ConsumerSpec:
    group_id: str
    handlers: dict[str, Dispatch]  # topic -> its dispatch table, (type, version) -> handler(uow, envelope)
    prepare: dict[str, Callable] = field(default_factory=dict)  # topic -> prepare(uow, envelopes), per batch
    max_poll_records: int = 500
    max_attempts: int = 3


@dataclass
class WorkerSpec:
    settings: Settings
    db: Database
    tables: dict
    consumers: list[ConsumerSpec] = field(default_factory=list)
    topics: dict[str, int] = field(default_factory=dict)  # topics this service owns or reads, with partitions
    # Schedules and job runners of the service: each is loop(stop) and runs until stop is set.
    loops: list[Callable[[threading.Event], None]] = field(default_factory=list)
    relay: bool = True  # False for a process of loops alone beside the service's worker (the relay is there)
    part: str = "worker"  # what /healthz says this process is


def run_worker(spec: WorkerSpec, stop: threading.Event | None = None) -> None:
    settings = spec.settings
    stop = stop or threading.Event()
    started = threading.Event()  # set once every thread runs: /healthz says "ok" only from then on
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: _on_signal(stop, started))
        _restart_if_not_started(started, stop, float(os.environ.get("WORKER_STARTUP_TIMEOUT", "90")))
    port = os.environ.get("WORKER_METRICS_PORT")
    if port:
        serve_metrics(int(port), settings.service, part=spec.part, ready=started)
    if settings.ensure_topics and spec.topics:
        all_topics = dict(spec.topics)
        all_topics.update({f"{t}.dlq": 1 for t in spec.topics})
        ensure_topics(settings.kafka_bootstrap_servers, all_topics)

    threads, producer = [], None
    if spec.relay or spec.consumers:  # the relay publishes with it; the consumers dead-letter with it
        producer = make_producer(settings.kafka_bootstrap_servers, client_id=f"{settings.service}-{spec.part}")
    if spec.relay:
        relay = OutboxRelay(spec.db.engine, spec.tables["outbox"], producer, settings.service,
                            in_process_wake=spec.db.committed)
        threads.append(threading.Thread(target=_guarded, args=(relay.run, stop), name="outbox-relay", daemon=True))
    consumers = []
    for c in spec.consumers:
        def client(c=c):
            return make_consumer(settings.kafka_bootstrap_servers, group_id=c.group_id, topics=list(c.handlers),
                                 client_id=f"{settings.service}-{c.group_id}", max_poll_records=c.max_poll_records,
                                 service=settings.service)
        consumer = IdempotentConsumer(db=spec.db, processed_table=spec.tables["processed_events"], consumer=client(),
                                      producer=producer, service=settings.service, group_id=c.group_id,
                                      handlers=c.handlers, max_attempts=c.max_attempts, prepare=c.prepare,
                                      reconnect=client)
        consumers.append(consumer)
        threads.append(threading.Thread(target=_guarded, args=(consumer.run, stop), name=c.group_id, daemon=True))
    for loop in spec.loops:
        threads.append(threading.Thread(target=_guarded, args=(loop, stop), name=getattr(loop, "__name__", "loop"),
                                        daemon=True))
    for t in threads:
        t.start()
    started.set()
    log.info("worker started", extra={"consumers": [c.group_id for c in spec.consumers]})
    stop.wait()
    log.info("worker stopping")
    for t in threads:
        t.join(timeout=15)
    for consumer in consumers:
        consumer.consumer.close(autocommit=False)  # the client it holds now: a stalled one was replaced
    if producer is not None:
        producer.flush(timeout=10)
        producer.close(timeout=10)


def _on_signal(stop: threading.Event, started: threading.Event) -> None:
    """SIGTERM/SIGINT: a running worker stops its threads and flushes. One still starting has
    nothing to flush, and may be blocked in a client call that never looks at `stop`: it leaves."""
    stop.set()
    if not started.is_set():
        log.warning("stopped while starting; where it was:")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(0)


def _restart_if_not_started(started: threading.Event, stop: threading.Event, timeout: float) -> None:
    """The start creates topics and asks the broker for their metadata, and kafka-python's
    metadata wait has no deadline: a request lost to a broker restart can hang it for ever, with
    the process alive and consuming nothing. After `timeout` the worker writes every thread's stack
    to its log and executes itself again (same pid, same arguments): with no orchestrator (make
    run, the tests) nothing else would; under Kubernetes the startup probe would, later."""
    def watch():
        if started.wait(timeout) or stop.is_set():
            return
        log.error("worker not started after %.0fs; restarting it", timeout)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - this very process, as it was started

    threading.Thread(target=watch, name="startup-watchdog", daemon=True).start()


def _guarded(loop, stop: threading.Event) -> None:
    """A relay or consumer loop that dies takes the process down, so the orchestrator restarts it
    (a worker that looks alive but no longer publishes would be worse)."""
    try:
        loop(stop)
    except Exception:
        log.exception("worker loop crashed; stopping the worker")
        stop.set()
        os._exit(1)
