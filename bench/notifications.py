"""Notifications benchmark (issue 17): lead.assigned events -> notifications written and e-mails
handed to a real SMTP server (aiosmtpd, in this process), by the real notifications worker and
sender, in PostgreSQL, with 1,000 reps in 50 teams whose preferences send assignments by e-mail.

- **Throughput**: n lead.assigned events are produced to Kafka before the worker starts; it drains
  them. Reported: notifications written per second (first to last), and e-mails accepted by the
  SMTP server per second. Goal: at least 2,000 notifications/s. Baseline, in the same run: the same
  number of events with e-mail off (in the app only), so the ratio says what e-mail costs.
- **Lag at 500 events/s**: with the worker running, events are produced at 500/s for 20 s; the lag
  of each is from its production to its notification's commit. Goal: p99 under 2 s. Measured with
  every notification also e-mailed (the goal's), and again with nothing to send.
- The worker runs as deployed: `--notification-replicas` worker processes sharing the consumer
  group, and the senders (`python -m services.notifications sender`) as a process of their own.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from aiosmtpd.controller import Controller
from kafka import KafkaProducer

from bench.common import infrastructure, write_result
from crmkit.events import encode, headers_for, new_event
from crmkit.kafka import ensure_topics
from infra.stack import SERVICES, migrate, service_env, worker_process
from services.notifications.events import LEADS_TOPIC, TOPIC_PARTITIONS

SERVICE = next(s for s in SERVICES if s.name == "notifications")
SECRET = "bench-secret-bench-secret-bench-secret-0123"
METRICS_PORT, SMTP_PORT = 18834, 18825
TEAMS, REPS_PER_TEAM = 50, 20
GOALS = {"notifications_per_second": 2000, "lag_p99_s": 2.0}


class _Count:
    def __init__(self):
        self.count, self.lock = 0, threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        with self.lock:
            self.count += 1
        return "250 OK"


def _organisation(dsn: str, email: bool) -> None:
    reps = TEAMS * REPS_PER_TEAM
    channels = json.dumps({"lead_assigned": ["inapp", "email"] if email else ["inapp"]})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("delete from notification_preferences")
        if not conn.execute("select 1 from directory_users limit 1").fetchone():
            with conn.cursor().copy("copy directory_teams (id, name, manager_id, updated_at) from stdin") as copy:
                for t in range(TEAMS):
                    copy.write_row((f"team-{t}", f"Team {t}", f"mgr-{t}", dt.datetime.now(dt.UTC)))
            with conn.cursor().copy("copy directory_users (id, name, role, team_id, active, updated_at) from stdin") as copy:
                for i in range(reps):
                    copy.write_row((f"rep-{i}", f"Rep {i}", "rep", f"team-{i // REPS_PER_TEAM}", True, dt.datetime.now(dt.UTC)))
        with conn.cursor().copy("copy notification_preferences (user_id, email, language, time_zone, channels, digest, "
                                "agenda_email, updated_at, version) from stdin") as copy:
            for i in range(reps):
                copy.write_row((f"rep-{i}", f"rep-{i}@example.com", "zh", "Asia/Shanghai", channels, False, False,
                                dt.datetime.now(dt.UTC), 1))


def _event(i: int) -> dict:
    lead_id = str(uuid.uuid4())
    lead = {"id": lead_id, "company": f"Company {i}", "contact_name": "Li", "status": "new", "owner_id": f"rep-{i % 1000}",
            "team_id": f"team-{(i % 1000) // REPS_PER_TEAM}",
            "follow_up_due_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()}
    return new_event("lead.assigned", lead_id, {"lead": lead, "previous_owner_id": None, "reason": "rule"},
                     source="leads", actor="system")


def _count(dsn: str, query: str, *args) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchone()[0]


def _start_workers(env: dict, state: Path, replicas: int) -> list:
    """The worker, scaled out as its Deployment would be (the consumer group shares the partitions),
    and the senders as the process of their own a deployment runs."""
    worker_env = {**env, "NOTIFICATIONS_SENDERS_IN_WORKER": "0"}
    return [*(worker_process(SERVICE, worker_env, state_dir=state / f"replica-{r}", metrics_port=METRICS_PORT + r)
              .start() for r in range(replicas)),
            worker_process(SERVICE, env, state_dir=state, metrics_port=METRICS_PORT + 10, part="sender").start()]


def _drain(env: dict, state: Path, dsn: str, topic: str, bootstrap: str, n: int, smtp: _Count, email: bool,
           replicas: int = 1) -> dict:
    _organisation(dsn, email)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024)
    for i in range(n):
        event = _event(i)
        producer.send(topic, key=event["subject"].encode(), value=encode(event), headers=headers_for(event))
    producer.flush()
    producer.close()
    before, mails_before = _count(dsn, "select count(*) from notifications"), smtp.count
    workers = _start_workers(env, state, replicas)
    try:
        first = last = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            written = _count(dsn, "select count(*) from notifications") - before
            if written and first is None:
                first = (time.perf_counter(), written)
            if written >= n and last is None:
                last = time.perf_counter()
            if last is not None and (not email or smtp.count - mails_before >= n):
                break
            time.sleep(0.2)
        mailed = time.perf_counter()
        assert last is not None, "not every event became a notification"
    finally:
        for worker in workers:
            worker.stop()
    out = {"events": n, "email": email, "seconds": round(last - first[0], 2),
           "notifications_per_second": round((n - first[1]) / (last - first[0]))}
    if email:
        out["emails"] = smtp.count - mails_before
        out["emails_per_second"] = round(out["emails"] / (mailed - first[0]))
    return out


def _lag(env: dict, state: Path, dsn: str, topic: str, bootstrap: str, rate: int, seconds: int,
         replicas: int = 1) -> dict:
    workers = _start_workers(env, state, replicas)
    for worker in workers:
        worker.wait_healthy()
    time.sleep(5 * replicas)  # the consumers join their group (and it rebalances)
    produced: dict[str, float] = {}
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    try:
        start = time.time()
        for i in range(rate * seconds):
            due = start + i / rate
            time.sleep(max(0.0, due - time.time()))
            event = _event(i)
            producer.send(topic, key=event["subject"].encode(), value=encode(event), headers=headers_for(event))
            produced[event["id"]] = time.time()
        producer.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _count(
                dsn, "select count(*) from notifications where event_id = any(%s)", list(produced)) < len(produced):
            time.sleep(0.5)
    finally:
        producer.close()
        for worker in workers:
            worker.stop()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select event_id, created_at from notifications where event_id = any(%s)",
                            (list(produced),)).fetchall()
    lags = sorted(created.timestamp() - produced[event_id] for event_id, created in rows)
    return {"rate_per_second": rate, "seconds": seconds, "events": len(produced), "told": len(lags),
            "lag_p50_s": round(lags[len(lags) // 2], 3), "lag_p99_s": round(lags[int(len(lags) * 0.99) - 1], 3),
            "lag_max_s": round(lags[-1], 3)}


def run(events: int = 100_000, replicas: int = 1) -> dict:
    broker, pg = infrastructure()
    url = pg.create_database()
    dsn = url.replace("postgresql+psycopg", "postgresql")
    state = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    prefix = f"b{uuid.uuid4().hex[:8]}."
    smtp = _Count()
    controller = Controller(smtp, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    env = service_env({"NOTIFICATIONS_DATABASE_URL": url, "CRM_JWT_SECRET": SECRET,
                       "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "CRM_TOPIC_PREFIX": prefix, "CRM_ENSURE_TOPICS": "1",
                       "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(SMTP_PORT), "CRM_LOG_LEVEL": "WARNING",
                       "NOTIFICATIONS_SEND_INTERVAL_SECONDS": "0.2", "NOTIFICATIONS_AGENDA_INTERVAL_SECONDS": "3600",
                       "NOTIFICATIONS_REMINDER_INTERVAL_SECONDS": "3600"}, state_dir=state)
    try:
        migrate(SERVICE, env)
        ensure_topics(broker.bootstrap, {f"{prefix}{t}": n for t, n in TOPIC_PARTITIONS.items()})
        topic = f"{prefix}{LEADS_TOPIC}"
        baseline = _drain(env, state, dsn, topic, broker.bootstrap, events, smtp, email=False, replicas=replicas)
        measured = _drain(env, state, dsn, topic, broker.bootstrap, events, smtp, email=True, replicas=replicas)
        lag = _lag(env, state, dsn, topic, broker.bootstrap, rate=500, seconds=20, replicas=replicas)
        _organisation(dsn, email=False)  # the same, with nothing to send: what sending costs the inbox
        lag_in_app = _lag(env, state, dsn, topic, broker.bootstrap, rate=500, seconds=20, replicas=replicas)
        result = {
            "throughput_with_email": measured, "baseline_in_app_only": baseline,
            "ratio_with_email_to_in_app_only": round(measured["notifications_per_second"]
                                                     / baseline["notifications_per_second"], 2),
            "lag_at_500_per_second": lag, "lag_at_500_per_second_in_app_only": lag_in_app,
            "worker_replicas": replicas,
            "goals": {**GOALS, "throughput_met": measured["notifications_per_second"] >= GOALS["notifications_per_second"],
                      "lag_met": lag["lag_p99_s"] < GOALS["lag_p99_s"]},
            "note": "1,000 reps in 50 teams; lead.assigned events produced to Kafka and drained by the real "
                    "notifications worker (replicas as given) into PostgreSQL, with the senders in a process of "
                    "their own as deployed; e-mails handed to an aiosmtpd server in the bench process; "
                    "everything on this machine's cores"}
        write_result("notifications", result)
        return result
    finally:
        controller.stop()
        pg.drop_database(url)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
