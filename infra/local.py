"""A Kafka broker and a PostgreSQL cluster on ports of their own, started through the project's
scripts, for the tests and the benchmarks. Their state lives in .state/<name>-<port>, so a test
that stops its broker never touches the one `make run` started, and later runs reuse warm ones.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaConsumer, TopicPartition

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("CRM_LOCAL_STATE_DIR", REPO / ".state"))


class Broker:
    def __init__(self, port: int, name: str = "test"):
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": str(STATE / f"{name}-kafka-{port}")}

    def _script(self, command: str, **env) -> None:
        subprocess.run([str(REPO / "infra/kafka/kafka.sh"), command], env={**self.env, **env}, check=True)

    def start(self, *, fresh: bool = False) -> None:
        """fresh: a broker not running starts empty (the test session's first start: earlier runs'
        topics are of no use and slow its start). A restart within a run keeps its topics."""
        self._script("start", KAFKA_FRESH="1" if fresh else "0")

    def stop(self) -> None:
        self._script("stop")


class Postgres:
    def __init__(self, port: int, name: str = "test"):
        self.port = port
        self.env = {**os.environ, "PG_PORT": str(port), "PG_STATE_DIR": str(STATE / f"{name}-postgres-{port}"),
                    "PG_DATABASES": "crm_test"}
        self.dsn = f"postgresql://crm:crm@127.0.0.1:{port}"

    def start(self) -> None:
        try:  # a cluster already serving this port with our credentials (another checkout's) will do
            with psycopg.connect(f"{self.dsn}/postgres", connect_timeout=2):
                return
        except psycopg.OperationalError:
            pass
        subprocess.run([str(REPO / "infra/postgres/postgres.sh"), "start"], env=self.env, check=True)

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{self.dsn}/postgres", autocommit=True) as conn:
            conn.execute(f"create database {name}")
        return f"postgresql+psycopg://crm:crm@127.0.0.1:{self.port}/{name}"

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        for attempt in range(60):
            try:
                with psycopg.connect(f"{self.dsn}/postgres", autocommit=True) as conn:
                    conn.execute(f"drop database if exists {name} with (force)")
                return
            except psycopg.errors.InsufficientPrivilege:
                # FORCE cannot end a session of another role: an autovacuum worker on the database.
                # After a test wrote 100,000 rows it may take some seconds (2.5 s were once too few).
                if attempt == 59:
                    raise
                time.sleep(0.5)


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
