"""A minimal service built from the kit alone (one `notes` table), to test the kit by itself."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from sqlalchemy import Column, Integer, String, Table, func, select

from crmkit.consumer import IdempotentConsumer
from crmkit.db import Database, new_metadata
from crmkit.events import new_event
from crmkit.kafka import ensure_topics, make_consumer, make_producer
from crmkit.outbox import OutboxRelay, OutboxWriter
from crmkit.tables import add_kit_tables

metadata = new_metadata()
KIT = add_kit_tables(metadata)
notes = Table("notes", metadata, Column("id", String(64), primary_key=True), Column("text", String(200)))
applied = Table("applied", metadata, Column("seq", Integer, primary_key=True, autoincrement=True),
                Column("subject", String(64)), Column("event_id", String(100)), Column("n", Integer))


def make_db(url: str, service: str = "kittest") -> Database:
    db = Database(url, OutboxWriter(KIT["outbox"], service))
    metadata.create_all(db.engine)
    return db


def write_note(db: Database, topic: str, subject: str, n: int = 0) -> dict:
    event = new_event("note.written", subject, {"n": n}, source="kittest")
    with db.uow() as uow:
        uow.session.execute(notes.insert().values(id=f"{subject}-{event['id'][:8]}", text=str(n)))
        uow.publish(topic, event)
        uow.commit()
    return event


def count(db: Database, table) -> int:
    with db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@contextmanager
def running_relay(db: Database, bootstrap: str, *, idle_wait: float = 1.0, service: str = "kittest"):
    producer = make_producer(bootstrap, client_id="relay-test")
    relay = OutboxRelay(db.engine, KIT["outbox"], producer, service, in_process_wake=db.committed)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_wait": idle_wait}, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        db.committed.set()
        thread.join(timeout=40)
        producer.close()


@contextmanager
def running_consumer(db: Database, bootstrap: str, topic: str, handler, *, group: str, max_attempts: int = 3):
    ensure_topics(bootstrap, {topic: 3, f"{topic}.dlq": 1})
    kc = make_consumer(bootstrap, group_id=group, topics=[topic], client_id="consumer-test")
    producer = make_producer(bootstrap, client_id="dlq-test")
    consumer = IdempotentConsumer(db=db, processed_table=KIT["processed_events"], consumer=kc, producer=producer,
                                  service="kittest", group_id=group, handlers={topic: handler},
                                  max_attempts=max_attempts, retry_backoff=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), kwargs={"poll_timeout_ms": 100}, daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(timeout=30)
        kc.close(autocommit=False)
        producer.close()


def record_handler(uow, event) -> None:
    uow.session.execute(applied.insert().values(subject=event["subject"], event_id=event["id"], n=event["data"]["n"]))
