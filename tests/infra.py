"""Test-only Kafka broker and PostgreSQL cluster, started through the project's own scripts.

They use their own ports and state folders (.state/test-*), so a test that stops the broker
never touches the one `make run` started, and several test runs reuse the same warm processes.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("CRM_TEST_STATE_DIR", REPO / ".state"))
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


class Broker:
    def __init__(self, port: int):
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": str(STATE / f"test-kafka-{port}")}

    def _script(self, command: str) -> None:
        subprocess.run([str(REPO / "infra/kafka/kafka.sh"), command], env=self.env, check=True)

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")


class Postgres:
    def __init__(self, port: int):
        self.port = port
        self.env = {**os.environ, "PG_PORT": str(port), "PG_STATE_DIR": str(STATE / f"test-postgres-{port}"),
                    "PG_DATABASES": "crm_test"}
        self.dsn = f"postgresql://crm:crm@127.0.0.1:{port}"

    def start(self) -> None:
        subprocess.run([str(REPO / "infra/postgres/postgres.sh"), "start"], env=self.env, check=True)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{self.dsn}/postgres", autocommit=True) as conn:
            conn.execute(f"create database {name}")
        return f"postgresql+psycopg://crm:crm@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{self.dsn}/postgres", autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def read_topic(bootstrap: str, topic: str, *, timeout_ms: int = 3000) -> list:
    """Every message now on a topic, from the beginning (no consumer group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=timeout_ms, isolation_level="read_committed")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        messages = []
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            batch = consumer.poll(timeout_ms=timeout_ms)
            if not batch:
                break
            for records in batch.values():
                messages.extend(records)
        return messages
    finally:
        consumer.close()
