"""Prometheus metrics that survive gunicorn's several workers (multiprocess mode).

Set PROMETHEUS_MULTIPROC_DIR (the Makefile and manifests do) and every process writes its
samples there; /metrics aggregates them. Without it, the default in-process registry is used.
"""
from __future__ import annotations

import json
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# In a container /tmp is an empty volume: the directory the samples go to must be made first.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

HTTP_REQUESTS = Counter("crm_http_requests_total", "HTTP requests", ["service", "route", "method", "status"])
HTTP_LATENCY = Histogram("crm_http_request_duration_seconds", "HTTP request latency", ["service", "route", "method"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
OUTBOX_BACKLOG = Gauge("crm_outbox_backlog", "Outbox rows not yet published", ["service"],
                       multiprocess_mode="livemostrecent")
OUTBOX_OLDEST_AGE = Gauge("crm_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["service"],
                          multiprocess_mode="livemostrecent")
OUTBOX_PUBLISH_LATENCY = Histogram("crm_outbox_publish_latency_seconds", "Commit-to-publish latency of events",
                                   ["service"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120))
EVENTS_PUBLISHED = Counter("crm_events_published_total", "Events published to Kafka", ["service", "topic"])
EVENTS_CONSUMED = Counter("crm_events_consumed_total", "Events consumed and applied (or skipped as replays)",
                          ["service", "topic", "outcome"])
EVENTS_FAILED = Counter("crm_events_failed_total", "Failed attempts to apply an event", ["service", "topic"])
EVENTS_DEAD_LETTERED = Counter("crm_events_dead_lettered_total", "Events sent to the dead-letter topic",
                               ["service", "topic"])
CONSUMER_LAG = Gauge("crm_consumer_lag", "Messages behind the end of the partition", ["service", "group", "topic"],
                     multiprocess_mode="livemostrecent")
CONSUMER_PARTITIONS = Gauge("crm_consumer_assigned_partitions", "Partitions the group's last rebalance gave this "
                            "process (0 while out of the group)", ["service", "group"],
                            multiprocess_mode="livesum")
CONSUMER_RESTARTS = Counter("crm_consumer_client_restarts_total",
                            "Kafka consumer clients replaced after a stall or a join that never completed",
                            ["service", "group"])
UPSTREAM_FAILURES = Counter("crm_gateway_upstream_failures_total", "Gateway calls to a service that failed",
                            ["upstream", "reason"])
RATE_LIMITED = Counter("crm_gateway_rate_limited_total", "Requests refused with 429", ["scope"])
# The orders worker's escalation schedule sets these on each pass: requests nobody decides are money
# nobody collects.
APPROVALS_PENDING = Gauge("crm_approvals_pending", "Approval requests waiting for a decision", ["service"],
                          multiprocess_mode="livemax")
APPROVALS_OLDEST_WAIT = Gauge("crm_approvals_oldest_waiting_seconds",
                              "How long the longest-waiting approval step has waited", ["service"],
                              multiprocess_mode="livemax")
# The notifications worker's senders: what was told, what went, what waits and for how long.
NOTIFICATIONS_RAISED = Counter("crm_notifications_total", "Notifications raised, by type", ["type"])
DELIVERIES = Counter("crm_notification_deliveries_total", "Delivery attempts by channel and outcome "
                     "(sent, retry, failed, cancelled)", ["channel", "outcome"])
DELIVERIES_DUE = Gauge("crm_notification_deliveries_due", "Deliveries due and not yet sent", ["channel"],
                       multiprocess_mode="livemax")
DELIVERY_OLDEST_DUE = Gauge("crm_notification_delivery_oldest_due_seconds",
                            "How long the longest-due delivery has waited past its time", ["channel"],
                            multiprocess_mode="livemax")
BUSINESS_EVENTS = Counter("crm_business_events_total", "Domain events by type (leads created, orders confirmed...)",
                          ["service", "type"])


def metrics_payload() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_metrics(port: int, service: str = "", part: str = "worker", ready=None) -> None:
    """For workers, which have no Flask app: a tiny HTTP server on its own port. /healthz names the
    service, so that whoever waits for it knows it is talking to this worker and not to whatever else
    holds the port. Until `ready` (a threading.Event) is set it answers 503 "starting": a worker whose
    start hangs (a metadata request that never returns) must not pass for one that consumes."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200
            if self.path.split("?")[0] == "/healthz":
                up = ready is None or ready.is_set()
                status = 200 if up else 503
                body = json.dumps({"status": "ok" if up else "starting", "service": service, "part": part}).encode()
                ctype = "application/json"
            elif self.path.split("?")[0] == "/metrics":
                body, ctype = metrics_payload()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
