"""The kit's event plumbing against a real Kafka broker, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import threading

import pytest
from kafka import KafkaProducer
from sqlalchemy import select, text

from crmkit.events import encode, headers_for, new_event
from crmkit.kafka import ensure_topics
from tests.infra import read_topic, wait_for
from tests.integration.harness import (
    KIT,
    applied,
    count,
    make_db,
    record_handler,
    running_consumer,
    running_relay,
    write_note,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def db(database_url):
    database = make_db(database_url)
    yield database
    database.engine.dispose()


def test_outbox_to_kafka_to_consumer_round_trip(db, kafka, topic_prefix):
    topic = f"{topic_prefix}notes"
    ensure_topics(kafka.bootstrap, {topic: 3})
    written = [write_note(db, topic, f"note-{i % 7}", n=i) for i in range(60)]
    with running_relay(db, kafka.bootstrap):
        wait_for(lambda: count(db, KIT["outbox"]) == 60 and _all_published(db))
    on_topic = read_topic(kafka.bootstrap, topic)
    assert sorted(json.loads(m.value)["id"] for m in on_topic) == sorted(e["id"] for e in written)
    for message in on_topic:
        envelope = json.loads(message.value)
        assert message.key.decode() == envelope["subject"]  # subject is the key: one record, one partition
        headers = dict(message.headers)
        assert headers["type"] == b"note.written"
        assert headers["correlation_id"] == envelope["correlation_id"].encode()
        assert headers["X-Request-ID"] == envelope["correlation_id"].encode()

    with running_consumer(db, kafka.bootstrap, topic, record_handler, group=f"{topic_prefix}g"):
        wait_for(lambda: count(db, applied) == 60)
    with db.engine.connect() as conn:
        assert conn.execute(select(applied.c.event_id)).scalars().all().__len__() == 60
    assert count(db, KIT["processed_events"]) == 60


def _all_published(db) -> bool:
    with db.engine.connect() as conn:
        return conn.execute(select(KIT["outbox"].c.id).where(KIT["outbox"].c.published_at.is_(None))).first() is None


def test_events_keep_their_order_per_subject(db, kafka, topic_prefix):
    topic = f"{topic_prefix}ordered"
    ensure_topics(kafka.bootstrap, {topic: 3})
    for n in range(30):
        for subject in ("a", "b", "c"):
            write_note(db, topic, subject, n=n)
    with running_relay(db, kafka.bootstrap):
        wait_for(lambda: _all_published(db))
    with running_consumer(db, kafka.bootstrap, topic, record_handler, group=f"{topic_prefix}g"):
        wait_for(lambda: count(db, applied) == 90)
    with db.engine.connect() as conn:
        rows = conn.execute(select(applied.c.subject, applied.c.n).order_by(applied.c.seq)).all()
    for subject in ("a", "b", "c"):
        assert [n for s, n in rows if s == subject] == list(range(30))


def test_the_same_event_delivered_twice_has_one_effect(db, kafka, topic_prefix):
    topic = f"{topic_prefix}dupes"
    ensure_topics(kafka.bootstrap, {topic: 3})
    event = new_event("note.written", "s1", {"n": 7}, source="test")
    other = new_event("note.written", "s2", {"n": 8}, source="test")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for e in (event, event, other, event):  # redelivery, also across batches below
        producer.send(topic, key=e["subject"].encode(), value=encode(e), headers=headers_for(e))
    producer.flush()
    group = f"{topic_prefix}g"
    with running_consumer(db, kafka.bootstrap, topic, record_handler, group=group):
        wait_for(lambda: count(db, applied) == 2)
    producer.send(topic, key=b"s1", value=encode(event), headers=headers_for(event)).get(timeout=10)
    with running_consumer(db, kafka.bootstrap, topic, record_handler, group=group) as consumer:
        wait_for(lambda: _committed_to_end(consumer, topic))
    with db.engine.connect() as conn:
        effects = conn.execute(select(applied.c.event_id)).scalars().all()
    assert sorted(effects) == sorted([event["id"], other["id"]])
    producer.close()


def _committed_to_end(consumer, topic) -> bool:
    kc = consumer.consumer
    tps = list(kc.assignment())
    if not tps:
        return False
    ends = kc.end_offsets(tps)
    return all((kc.committed(tp) or 0) >= ends[tp] for tp in tps)


def test_poison_message_goes_to_dlq_with_headers_and_the_next_is_processed(db, kafka, topic_prefix):
    topic = f"{topic_prefix}poison"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    attempts = {"poison": 0}

    def handler(uow, event):
        if event["data"].get("poison"):
            attempts["poison"] += 1
            raise ValueError("cannot digest this note")
        record_handler(uow, event)

    good1 = new_event("note.written", "k", {"n": 1}, source="test")
    poison = new_event("note.written", "k", {"n": 2, "poison": True}, source="test")
    good2 = new_event("note.written", "k", {"n": 3}, source="test")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(topic, key=b"k", value=encode(good1))
    producer.send(topic, key=b"k", value=encode(poison), headers=headers_for(poison))
    producer.send(topic, key=b"k", value=b"{not json")
    producer.send(topic, key=b"k", value=encode(good2))
    producer.flush()
    producer.close()

    with running_consumer(db, kafka.bootstrap, topic, handler, group=f"{topic_prefix}g", max_attempts=3):
        wait_for(lambda: count(db, applied) == 2)
        dead = wait_for(lambda: (lambda m: m if len(m) == 2 else None)(read_topic(kafka.bootstrap, f"{topic}.dlq")))

    with db.engine.connect() as conn:
        assert sorted(conn.execute(select(applied.c.n)).scalars()) == [1, 3]
    assert attempts["poison"] == 3  # bounded retries, then dead-lettered
    by_value = {m.value: dict(m.headers) for m in dead}
    assert set(by_value) == {encode(poison), b"{not json"}  # original bytes, untouched
    poison_headers = by_value[encode(poison)]
    assert poison_headers["error"] == b"cannot digest this note"
    assert poison_headers["error_type"] == b"ValueError"
    assert poison_headers["original_topic"] == topic.encode()
    assert poison_headers["original_partition"] == b"0"
    assert poison_headers["original_offset"] == b"1"
    assert poison_headers["failed_at"]
    assert poison_headers["type"] == b"note.written"  # the original headers travel along
    garbage_headers = by_value[b"{not json"]
    assert garbage_headers["error_type"] == b"BadEnvelope"
    assert garbage_headers["original_offset"] == b"2"


def test_relay_never_skips_a_row_that_commits_after_a_later_one(postgres, kafka, topic_prefix):
    """PostgreSQL only: SQLite has one writer at a time, so its rows cannot commit out of id order."""
    database_url = postgres.create_database()
    db = make_db(database_url)
    topic = f"{topic_prefix}late"
    ensure_topics(kafka.bootstrap, {topic: 1})
    early = new_event("note.written", "x", {"n": 1}, source="test")
    late_session = db.sessions()
    db.outbox_writer.add(late_session, topic, early)  # gets the lower id, not committed yet
    late_session.flush()
    with running_relay(db, kafka.bootstrap, idle_wait=0.2):
        later = write_note(db, topic, "y", n=2)
        wait_for(lambda: len(read_topic(kafka.bootstrap, topic, timeout_ms=500)) == 1)
        late_session.commit()
        late_session.close()
        wait_for(lambda: len(read_topic(kafka.bootstrap, topic, timeout_ms=500)) == 2)
    ids = {json.loads(m.value)["id"] for m in read_topic(kafka.bootstrap, topic)}
    assert ids == {early["id"], later["id"]}
    db.engine.dispose()
    postgres.drop_database(database_url)


def test_relay_wakes_on_a_commit_made_by_another_process(database_url, kafka, topic_prefix):
    """The relay idles for 60 s between polls; a commit from another engine (another process, in
    production: the API) must wake it through pg_notify or SQLite's data_version well before that."""
    relay_db, api_db = make_db(database_url), make_db(database_url)
    topic = f"{topic_prefix}wake"
    ensure_topics(kafka.bootstrap, {topic: 1})
    done = threading.Event()
    with running_relay(relay_db, kafka.bootstrap, idle_wait=60):
        write_note(relay_db, topic, "warm-up")  # first pass done, relay now waiting
        wait_for(lambda: _all_published(relay_db))
        write_note(api_db, topic, "from-api")
        wait_for(lambda: _all_published(relay_db), timeout=20)
        done.set()
    assert done.is_set()
    assert len(read_topic(kafka.bootstrap, topic)) == 2
    relay_db.engine.dispose()
    api_db.engine.dispose()


def test_two_relays_on_one_database_publish_each_event_once(postgres, kafka, topic_prefix):
    """Scaling the worker out must not double-send: only the advisory-lock holder publishes."""
    url = postgres.create_database()
    first, second = make_db(url), make_db(url)
    topic = f"{topic_prefix}two-relays"
    ensure_topics(kafka.bootstrap, {topic: 3})
    with running_relay(first, kafka.bootstrap, idle_wait=0.1), running_relay(second, kafka.bootstrap, idle_wait=0.1):
        written = [write_note(first if i % 2 else second, topic, f"s{i % 5}", n=i) for i in range(200)]
        wait_for(lambda: _all_published(first))
    ids = [json.loads(m.value)["id"] for m in read_topic(kafka.bootstrap, topic)]
    assert sorted(ids) == sorted(e["id"] for e in written)  # all there, none twice
    first.engine.dispose()
    second.engine.dispose()
    postgres.drop_database(url)


def test_relay_reconnects_when_its_listen_connection_is_killed(postgres, kafka, topic_prefix):
    url = postgres.create_database()
    db = make_db(url)
    topic = f"{topic_prefix}reconnect"
    ensure_topics(kafka.bootstrap, {topic: 1})
    name = url.rsplit("/", 1)[1]
    with running_relay(db, kafka.bootstrap, idle_wait=0.2):
        write_note(db, topic, "before")
        wait_for(lambda: _all_published(db))
        with db.engine.begin() as conn:
            killed = conn.execute(text(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = :db and application_name = 'crm-outbox-relay-kittest'"), {"db": name}).scalars().all()
        assert killed == [True]
        write_note(db, topic, "after")
        wait_for(lambda: _all_published(db), timeout=30)
    assert len(read_topic(kafka.bootstrap, topic)) == 2
    db.engine.dispose()
    postgres.drop_database(url)


def test_a_consumer_with_lag_and_no_progress_gives_up(db, kafka, topic_prefix):
    """The watchdog: messages waiting, none consumed (here: partitions paused) → ConsumerStalled.
    A consumer with no way to make a new client gives up (and its worker exits)."""
    from crmkit.consumer import ConsumerStalled, IdempotentConsumer
    from crmkit.kafka import make_consumer, make_producer

    topic = f"{topic_prefix}stall"
    ensure_topics(kafka.bootstrap, {topic: 1})
    write_note(db, topic, "waiting")
    with running_relay(db, kafka.bootstrap):
        wait_for(lambda: _all_published(db))
    kc = make_consumer(kafka.bootstrap, group_id=f"{topic_prefix}g", topics=[topic], client_id="stall-test")
    producer = make_producer(kafka.bootstrap, client_id="stall-dlq")
    consumer = IdempotentConsumer(db=db, processed_table=KIT["processed_events"], consumer=kc, producer=producer,
                                  service="kittest", group_id=f"{topic_prefix}g", handlers={topic: record_handler},
                                  stall_after=2.0, lag_interval=0.5)
    wait_for(lambda: kc.poll(timeout_ms=100) is not None and kc.assignment(), timeout=30)
    kc.pause(*kc.assignment())
    kc.seek_to_beginning()
    with pytest.raises(ConsumerStalled, match="1 messages waiting"):
        consumer.run(threading.Event(), poll_timeout_ms=100)
    assert count(db, applied) == 0
    kc.close(autocommit=False)
    producer.close()


def test_a_stalled_client_is_replaced_and_the_waiting_message_applied_once(db, kafka, topic_prefix):
    """The worker's consumers can make a new client (reconnect): the stalled one (paused here) is
    closed uncommitted and replaced, and what was waiting is applied by the new one."""
    from crmkit import metrics
    from crmkit.consumer import IdempotentConsumer
    from crmkit.kafka import make_consumer, make_producer

    topic, group = f"{topic_prefix}stall-replaced", f"{topic_prefix}g-replaced"
    ensure_topics(kafka.bootstrap, {topic: 1})
    write_note(db, topic, "waiting")
    with running_relay(db, kafka.bootstrap):
        wait_for(lambda: _all_published(db))
    made = []

    def client():
        made.append(make_consumer(kafka.bootstrap, group_id=group, topics=[topic], client_id="replace-test"))
        return made[-1]

    stuck = client()
    wait_for(lambda: stuck.poll(timeout_ms=100) is not None and stuck.assignment(), timeout=30)
    stuck.pause(*stuck.assignment())
    stuck.seek_to_beginning()
    producer = make_producer(kafka.bootstrap, client_id="replace-dlq")
    consumer = IdempotentConsumer(db=db, processed_table=KIT["processed_events"], consumer=stuck, producer=producer,
                                  service="kittest", group_id=group, handlers={topic: record_handler},
                                  stall_after=2.0, lag_interval=0.5, reconnect=client)
    restarts = metrics.CONSUMER_RESTARTS.labels("kittest", group)
    before = restarts._value.get()
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop,), kwargs={"poll_timeout_ms": 100})
    runner.start()
    try:
        wait_for(lambda: count(db, applied) == 1, timeout=60, what="the waiting message applied")
    finally:
        stop.set()
        runner.join(timeout=30)
    assert len(made) == 2 and consumer.consumer is made[1] and restarts._value.get() == before + 1
    assert count(db, applied) == 1
    made[1].close(autocommit=False)
    producer.close()


def test_a_client_that_never_joins_its_group_is_replaced(db, kafka, topic_prefix):
    """A client left outside its group (here: its broker accepts the connection and never answers)
    is replaced `join_within` seconds after it was made, and the new one consumes."""
    import socket

    from kafka import KafkaConsumer

    from crmkit.consumer import IdempotentConsumer
    from crmkit.kafka import Membership, make_consumer, make_producer

    topic, group = f"{topic_prefix}never-joined", f"{topic_prefix}g-never"
    ensure_topics(kafka.bootstrap, {topic: 1})
    write_note(db, topic, "waiting")
    with running_relay(db, kafka.bootstrap):
        wait_for(lambda: _all_published(db))
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never speaks Kafka
    limbo = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{silent.getsockname()[1]}", group_id=group,
                          enable_auto_commit=False, api_version=(3, 0))
    limbo.crm_membership = Membership()
    limbo.subscribe([topic], listener=limbo.crm_membership)
    producer = make_producer(kafka.bootstrap, client_id="never-dlq")
    consumer = IdempotentConsumer(
        db=db, processed_table=KIT["processed_events"], consumer=limbo, producer=producer, service="kittest",
        group_id=group, handlers={topic: record_handler}, join_within=2.0,
        reconnect=lambda: make_consumer(kafka.bootstrap, group_id=group, topics=[topic], client_id="never-test"))
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, args=(stop,), kwargs={"poll_timeout_ms": 100})
    runner.start()
    try:
        wait_for(lambda: count(db, applied) == 1, timeout=60, what="the waiting message applied")
        assert consumer.consumer is not limbo and consumer.consumer.crm_membership.joined.is_set()
    finally:
        stop.set()
        runner.join(timeout=30)
        silent.close()
    consumer.consumer.close(autocommit=False)
    producer.close()
