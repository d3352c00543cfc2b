"""Ingestion benchmark (issue 2): marketing.leads.inbound.v1 → leads in PostgreSQL with their
lead.created events published, against a plain kafka-python consumer reading the same messages
from the same broker in the same run, and Kafka's own ProducerPerformance as the broker ceiling."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import psycopg
from kafka import KafkaConsumer

from bench.common import infrastructure, summary_ms, write_result
from crmkit.db import Database
from crmkit.kafka import ensure_topics
from crmkit.outbox import OutboxWriter
from infra.local import REPO
from infra.stack import SERVICES, migrate, service_env, worker_process
from tests.e2e.helpers import marketing_event, produce

LEADS = next(s for s in SERVICES if s.name == "leads")


def plain_consumer_rate(bootstrap: str, topic: str, total: int) -> dict:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"baseline-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=500)
    seen, started = 0, None
    deadline = time.monotonic() + 300
    while seen < total and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500)
        if batch and started is None:
            started = time.perf_counter()
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return {"messages": seen, "seconds": round(elapsed, 3), "messages_per_s": round(seen / elapsed, 1)}


def producer_performance(bootstrap: str, records: int = 500_000) -> dict:
    classpath = subprocess.run([str(REPO / "infra/kafka/kafka.sh"), "classpath"], capture_output=True, text=True,
                               check=True).stdout.strip()
    out = subprocess.run(
        ["java", "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.ProducerPerformance",
         "--topic", f"perf-{uuid.uuid4().hex[:6]}", "--num-records", str(records), "--record-size", "512",
         "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all"],
        capture_output=True, text=True, check=True, timeout=600).stdout.strip().splitlines()[-1]
    match = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\)", out)
    return {"records": records, "record_bytes": 512, "acks": "all", "records_per_s": float(match.group(1)),
            "mb_per_s": float(match.group(2)), "raw": out}


def _with_assignment(dsn: str) -> None:
    """Assignment rules and a directory of 20 reps in two teams, as the worker would have them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(20):
            conn.execute("insert into directory_users (id, name, role, team_id, region, active, updated_at) "
                         "values (%s, %s, 'rep', %s, 'east', true, now())", (f"rep-{i}", f"rep {i}", f"team-{i % 2}"))
        rules = {"rules": [
            {"name": "east", "match": {"region": "east"}, "assign_to": {"team_id": "team-0"}, "strategy": "round_robin"},
            {"name": "rest", "match": {}, "assign_to": {"team_id": "team-1"}, "strategy": "least_loaded"}]}
        conn.execute("insert into rule_documents (name, body, version, updated_at) values ('assignment', %s, 1, now())",
                     (json.dumps(rules),))


def pipeline_rate(broker, pg, topic_prefix: str, total: int, tmp, *, with_rules: bool = False) -> dict:
    url = pg.create_database()
    env = service_env({"LEADS_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                       "CRM_TOPIC_PREFIX": topic_prefix, "CRM_JWT_SECRET": "x" * 40}, state_dir=tmp)
    migrate(LEADS, env)
    dsn = url.replace("postgresql+psycopg", "postgresql")
    if with_rules:
        _with_assignment(dsn)
    started = time.perf_counter()
    worker = worker_process(LEADS, env, state_dir=tmp, metrics_port=19501).start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                applied, pending = conn.execute(
                    "select (select coalesce(sum(touches), 0) from leads), "
                    "(select count(*) from outbox where published_at is null)").fetchone()
                if applied >= total and pending == 0:
                    break
                if time.perf_counter() - started > 900:
                    raise RuntimeError(f"only {applied} messages applied after 900 s")
                time.sleep(0.2)
            wall = time.perf_counter() - started
            first, last = conn.execute(
                "select min(created_at), max(published_at) from outbox").fetchone()
            window = (last - first).total_seconds()
            latency = conn.execute(
                "select extract(epoch from published_at - created_at) from outbox").fetchall()
            leads, merged, assigned = conn.execute(
                "select count(*), count(*) filter (where touches > 1), count(owner_id) from leads").fetchone()
        relay = relay_wake_latency(url, topic_prefix)
    finally:
        worker.stop()
        pg.drop_database(url)
    return {"messages": total, "leads": leads, "merged_leads": merged, "assigned_leads": assigned,
            "wall_seconds_incl_startup": round(wall, 2), "processing_seconds": round(window, 2),
            "messages_per_s": round(total / window, 1), "leads_per_s": round(total / window, 1),
            "leads_per_s_incl_startup": round(total / wall, 1),
            "commit_to_publish_under_load": summary_ms([r[0] for r in latency]),
            "relay_wake_latency_idle": relay}


def relay_wake_latency(url: str, topic_prefix: str, events: int = 200) -> dict:
    """Single commits from another process (as the API makes them), 20 ms apart, while the worker's
    relay is idle: how long from commit to acknowledged publish? This is the LISTEN/NOTIFY path."""
    from sqlalchemy import select

    from crmkit.events import new_event
    from services.leads.db import KIT_TABLES

    db = Database(url, OutboxWriter(KIT_TABLES["outbox"], "leads"))
    ids = []
    for i in range(events):
        event = new_event("bench.ping", uuid.uuid4(), {"i": i}, source="bench")
        with db.uow() as uow:
            uow.publish(f"{topic_prefix}crm.leads.v1", event)
            uow.commit()
        ids.append(event["id"])
        time.sleep(0.02)
    t = KIT_TABLES["outbox"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.engine.connect() as conn:
            rows = conn.execute(select(t.c.created_at, t.c.published_at).where(t.c.event_id.in_(ids))).all()
        if all(r.published_at for r in rows):
            break
        time.sleep(0.1)
    db.engine.dispose()
    return summary_ms([(r.published_at - r.created_at).total_seconds() for r in rows])


def _with_duplicates(total: int):
    """Every tenth message repeats an earlier prospect (same email, new external id)."""
    for i in range(total):
        if i % 10 == 9:
            original = i - 5
            yield marketing_event(i, email=f"c{original}@example.com", phone=None, company=f"Company {original} Ltd.",
                                  contact_name=f"Contact {original}", region="west")
        else:
            yield marketing_event(i)


def run(total: int = 100_000) -> dict:
    import tempfile
    from pathlib import Path

    broker, pg = infrastructure()
    prefix = f"b{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}marketing.leads.inbound.v1"
    ensure_topics(broker.bootstrap, {topic: 6, f"{prefix}crm.leads.v1": 6})
    t0 = time.perf_counter()
    produce(broker.bootstrap, topic, (marketing_event(i) for i in range(total)))
    produce_seconds = time.perf_counter() - t0
    baseline = plain_consumer_rate(broker.bootstrap, topic, total)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = pipeline_rate(broker, pg, prefix, total, Path(tmp))
    # Issue 3: the full pipeline (dedupe + score + assign by rules) with 10% duplicates.
    dup_prefix = f"d{uuid.uuid4().hex[:8]}."
    dup_topic = f"{dup_prefix}marketing.leads.inbound.v1"
    ensure_topics(broker.bootstrap, {dup_topic: 6, f"{dup_prefix}crm.leads.v1": 6})
    produce(broker.bootstrap, dup_topic, _with_duplicates(total))
    dup_baseline = plain_consumer_rate(broker.bootstrap, dup_topic, total)
    with tempfile.TemporaryDirectory() as tmp:
        dedupe = pipeline_rate(broker, pg, dup_prefix, total, Path(tmp), with_rules=True)
    ceiling = producer_performance(broker.bootstrap)
    result = {
        "messages": total,
        "produce_seconds_python": round(produce_seconds, 2),
        "baseline_plain_consumer": baseline,
        "pipeline_worker_to_postgres_and_kafka": pipeline,
        "ratio_pipeline_to_plain_consumer": round(pipeline["messages_per_s"] / baseline["messages_per_s"], 4),
        "baseline_plain_consumer_dedupe_run": dup_baseline,
        "pipeline_with_10pct_duplicates_and_assignment": dedupe,
        "ratio_dedupe_pipeline_to_plain_consumer": round(
            dedupe["messages_per_s"] / dup_baseline["messages_per_s"], 4),
        "broker_ceiling_producer_performance": ceiling,
    }
    print(write_result("ingest", result))
    return result
