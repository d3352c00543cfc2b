"""Kafka clients with the settings the kit relies on, and topic bootstrap for development."""
from __future__ import annotations

import logging
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from . import metrics

log = logging.getLogger(__name__)


def make_producer(bootstrap: str, *, client_id: str) -> KafkaProducer:
    # Idempotent producer: broker-side dedupe of retries and per-partition order with up to
    # 5 requests in flight. A long delivery timeout rides out a broker restart without the
    # relay having to resend (which is what could put an event on the topic twice).
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        compression_type="lz4",
        max_in_flight_requests_per_connection=5,
        delivery_timeout_ms=10 * 60 * 1000,
        request_timeout_ms=30_000,
        max_block_ms=10_000,
        reconnect_backoff_max_ms=2_000,
    )


def make_consumer(bootstrap: str, *, group_id: str, topics: list[str], client_id: str,
                  max_poll_records: int = 500, service: str = "") -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,  # offsets move only after the effect has committed in our database
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=max_poll_records,
        max_poll_interval_ms=300_000,
        # A worker that dies (SIGKILL, a lost node) has its partitions taken over by the others
        # after this long; the client's default is 45 s. Heartbeats come from kafka-python's own
        # network thread, so a long batch does not count against it (max_poll_interval_ms does).
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
        reconnect_backoff_max_ms=2_000,
    )
    # Learn the topics' partitions before joining the group. Otherwise the first JoinGroup goes
    # out without them and the metadata that arrives next forces an immediate rejoin; in
    # kafka-python 3.0.12 that rejoin sometimes leaves the consumer spinning without ever
    # fetching offsets (seen in about 1 start in 25 here).
    for topic in topics:
        consumer.partitions_for_topic(topic)
    membership = Membership(group_id, service)
    consumer.subscribe(topics, listener=membership)
    consumer.crm_membership = membership  # read by crmkit.consumer's watchdog
    return consumer


class Membership(ConsumerRebalanceListener):
    """Whether the consumer is in its group: joined once a rebalance has assigned it partitions
    (an empty assignment counts: a member beyond the topic's partitions joins and gets nothing),
    out from the moment a rebalance revokes them until the next assignment."""

    def __init__(self, group_id: str = "", service: str = ""):
        self.group_id = group_id
        self.joined = threading.Event()
        self.out_since = time.monotonic()
        self._partitions = metrics.CONSUMER_PARTITIONS.labels(service, group_id)

    def on_partitions_revoked(self, revoked):
        if self.joined.is_set():
            self.out_since = time.monotonic()
        self.joined.clear()
        self._partitions.set(0)

    def on_partitions_assigned(self, assigned):
        log.info("consumer group %s joined with %d partitions", self.group_id, len(assigned))
        self._partitions.set(len(assigned))
        self.joined.set()


def ensure_topics(bootstrap: str, topics: dict[str, int], *, replication: int = 1) -> None:
    """Create missing topics (development and tests; production declares KafkaTopic resources)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="crm-topic-bootstrap")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, partitions, replication) for name, partitions in topics.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race
            log.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        admin.close()


_reachability: dict[str, tuple[float, bool]] = {}


def kafka_reachable(bootstrap: str, *, cache_seconds: float = 5.0, timeout: float = 1.0) -> bool:
    """Readiness: can we open a TCP connection to any bootstrap broker? Cached, so probes stay cheap."""
    import socket
    import time

    now = time.monotonic()
    cached = _reachability.get(bootstrap)
    if cached and now - cached[0] < cache_seconds:
        return cached[1]
    ok = False
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                ok = True
                break
        except (OSError, ValueError):
            continue
    _reachability[bootstrap] = (now, ok)
    return ok
