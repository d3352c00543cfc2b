"""What the deployment needs to know of the code, read from the code itself: the deployables, the
environment variables each one's packages read, the consumer groups and topics of each worker,
and every topic with its partitions. deploy/generate.py writes the manifests from it; the
deployment tests check the manifests against it."""
from __future__ import annotations

import importlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from infra.stack import GATEWAY, RECORD_SERVICES, SERVICES

REPO = Path(__file__).resolve().parent.parent
# compose only, for one laptop: overridden by the variable when it is set
DEV_JWT_SECRET = "${CRM_JWT_SECRET:-dev-only-secret-change-me-in-production-0123456789}"  # noqa: S105


@dataclass(frozen=True)
class Deployable:
    name: str
    package: str
    upstreams: tuple[str, ...] = ()
    resources: dict = field(default_factory=lambda: {
        "api": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "worker": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "500m", "memory": "384Mi"}},
        "sender": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}})
    # The processes it runs, each its own Deployment: the API, the worker, and for notifications the
    # senders (`python -m <package> sender`), apart so that sending scales on its own and only they
    # may reach the SMTP relay and the internet.
    components: tuple[str, ...] = ("api", "worker")

    @property
    def image(self) -> str:
        return f"sfa-crm-{self.name}"

    @property
    def database(self) -> str:
        return f"{self.name}-db"

    @property
    def source_dirs(self) -> list[Path]:
        return [REPO / "crmkit", REPO / Path(*self.package.split("."))]

    @property
    def consumed(self) -> list[tuple[str, str]]:
        """(consumer group, topic) of each of the worker's consumers."""
        return worker_consumers(self.package)

    def partitions_of(self, topic: str) -> int:
        return next(t.partitions for t in topics() if t.name == topic)


DEPLOYABLES = [
    *(Deployable(s.name, s.package, components=("api", "worker", "sender") if s.name == "notifications"
                 else ("api", "worker")) for s in SERVICES),
    Deployable(GATEWAY.name, GATEWAY.package, upstreams=tuple(s.name for s in SERVICES)),
]


# ---- environment variables ------------------------------------------------------------------------------
_READS = re.compile(r"""(?:environ\.get|environ\[|env\.get|getenv|_int|_float)\(\s*(f?)["']([A-Za-z_{}().]+)["']""")


# What only a worker process reads (crmkit.worker): the API and the migration are not given them.
WORKER_ONLY = frozenset({"WORKER_METRICS_PORT", "WORKER_STARTUP_TIMEOUT"})

def env_read_by(d: Deployable) -> set[str]:
    """Every environment variable the deployable's code reads (f-string names resolved)."""
    names = set()
    for directory in d.source_dirs:
        for path in directory.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for is_f, name in _READS.findall(path.read_text()):
                if not is_f:
                    names.add(name)
                elif name == "{service.upper()}_DATABASE_URL":
                    names.add(f"{d.name.upper()}_DATABASE_URL")
                elif name == "{name.upper()}_URL":
                    names.update(f"{u.upper()}_URL" for u in d.upstreams)
                else:
                    raise ValueError(f"{path}: environment variable {name!r} built in a way inventory.py cannot resolve")
    return names


def _secret(name: str, key: str, compose: str, optional: bool = False) -> dict:
    ref = {"name": name, "key": key, "compose": compose}
    if optional:
        ref["optional"] = True
    return ref


# Read by the code, never set by a deployment: a test's clock for the schedules (crmkit.clock).
TEST_SEAMS = frozenset({"CRM_CLOCK_FILE"})


# Where the notifications senders run apart (the only pods that may reach the internet), secrets go
# only where they are used: the senders hold no token key (a receiver that broke into one could not
# mint tokens) and need no Kafka; the API and the worker hold no SMTP login.
_SMTP = {"SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS", "SMTP_USERNAME", "SMTP_PASSWORD"}
NOT_GIVEN_TO = {"sender": {"CRM_JWT_SECRET", "CRM_JWT_PUBLIC_KEY", "CRM_JWT_JWKS_URL", "KAFKA_BOOTSTRAP_SERVERS"},
                "api": _SMTP, "worker": _SMTP}


def env_for(d: Deployable, component: str, *, kafka: str) -> dict[str, object]:
    """The value (or secret reference, a dict) of every variable the deployable reads. Fails for a
    variable nobody has decided a value for, so a new setting cannot ship unconfigured."""
    upper = d.name.upper()
    values: dict[str, object] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        f"{upper}_DATABASE_URL": _secret(f"{d.database}-app", "uri",
                                         f"postgresql://crm:${{POSTGRES_PASSWORD:-crm-dev}}@postgres:5432/{d.name}"),
        "CRM_JWT_SECRET": _secret("crm-jwt", "secret", DEV_JWT_SECRET),
        # One source for the RS256 public key: the Secret the edge reads it from too.
        "CRM_JWT_PUBLIC_KEY": _secret("crm-jwt", "public-key", "", optional=True),
        "CRM_JWT_JWKS_URL": "", "CRM_JWT_ISSUER": "sfa-crm", "CRM_JWT_AUDIENCE": "sfa-crm-api",
        "CRM_DEFAULT_CURRENCY": "CNY", "CRM_MAX_BODY_BYTES": 1048576, "CRM_MAX_IMPORT_BYTES": 20971520,
        # Topics are declared (KafkaTopic resources), not created by whichever worker starts first.
        "CRM_TOPIC_PREFIX": "", "CRM_ENSURE_TOPICS": "0" if kafka != "kafka:9092" else "1",
        "CRM_STATE_DIR": "/tmp/crm",  # noqa: S108 - inside the container's own /tmp volume
        "CRM_LOG_LEVEL": "INFO", "CRM_KAFKA_LOG_LEVEL": "WARNING",
        "BIND": "0.0.0.0:8000", "WEB_CONCURRENCY": 2, "GUNICORN_THREADS": 16 if d.name == "gateway" else 4,
        "GUNICORN_TIMEOUT": 60, "PROMETHEUS_MULTIPROC_DIR": "/tmp/prometheus",  # noqa: S108 - likewise
        "WORKER_METRICS_PORT": 9100, "WORKER_STARTUP_TIMEOUT": 90,
        "LEADS_FOLLOW_UP_SLA_HOURS": 24, "OPPORTUNITIES_TIER_INTERVAL_SECONDS": 30,
        "LEADS_IMPORT_MAX_ROWS": 200000, "OPPORTUNITIES_RECHECK_INTERVAL_SECONDS": 0.5,
        "OPPORTUNITIES_VISIT_SWEEP_SECONDS": 60,
        "ORDERS_ESCALATION_INTERVAL_SECONDS": 60, "ORDERS_ALERT_INTERVAL_SECONDS": 300,
        "CRM_TIME_ZONE": "Asia/Shanghai", "CRM_LANGUAGE": "zh",
        # notifications: the schedules, the ladder (empty: the default), the morning agenda, e-mail
        "NOTIFICATIONS_REMINDER_INTERVAL_SECONDS": 30, "NOTIFICATIONS_SEND_INTERVAL_SECONDS": 1,
        "NOTIFICATIONS_EMAIL_SENDERS": 4,
        # The senders run as the notifications-sender Deployment, so the worker does not send.
        "NOTIFICATIONS_SENDERS_IN_WORKER": 0,
        "NOTIFICATIONS_AGENDA_INTERVAL_SECONDS": 60, "NOTIFICATIONS_WEBHOOK_INTERVAL_SECONDS": 1,
        # No webhook target is exempt from the SSRF guard in a deployment (tests and laptops only).
        "NOTIFICATIONS_WEBHOOK_ALLOW": "", "NOTIFICATIONS_WEBHOOK_ROTATION_HOURS": 24,
        "NOTIFICATIONS_LADDER": "", "NOTIFICATIONS_AGENDA_HOUR": 8,
        "SMTP_HOST": _secret("crm-smtp", "host", "mailpit"), "SMTP_PORT": _secret("crm-smtp", "port", "1025"),
        "SMTP_STARTTLS": _secret("crm-smtp", "starttls", "0"),
        "SMTP_USERNAME": _secret("crm-smtp", "username", "", optional=True),
        "SMTP_PASSWORD": _secret("crm-smtp", "password", "", optional=True),
        "SMTP_FROM": "SFA CRM <crm@example.com>", "CRM_PUBLIC_URL": "https://crm.example.com",
        "CRM_DIRECTORY_REFRESH_SECONDS": 0.5, "CRM_DIRECTORY_CATCH_UP_SECONDS": 3,
        # The gateway API's /metrics on the metrics port, not on the port the ingress exposes.
        # (Read by gunicorn only, so the worker ignores it; empty for the services, whose API port is internal.)
        "CRM_METRICS_PORT": 9100 if d.name == "gateway" else "", "CRM_METRICS_ADDR": "0.0.0.0",
        # the gateway
        **{f"{u.upper()}_URL": f"http://{u}-api:8000" for u in d.upstreams},
        "CRM_HANDOVER_SERVICES": ",".join(u for u in d.upstreams if u in RECORD_SERVICES),
        "CRM_ADMIN_PASSWORD": _secret("crm-admin", "password", "${CRM_ADMIN_PASSWORD:-admin-dev-password}"),
        "CRM_JWT_PRIVATE_KEY": _secret("crm-jwt", "private-key", "", optional=True), "CRM_JWT_KEY_ID": "",
        "CRM_TOKEN_TTL_SECONDS": 900, "CRM_SIGN_IN_FAILURES": 10, "CRM_SIGN_IN_WINDOW_SECONDS": 900,
        "CRM_SIGN_IN_CONCURRENCY": 4,  # password checks at once per process (~32 MiB each)
        "CRM_UPSTREAM_CONNECT_TIMEOUT": 2,
        "CRM_UPSTREAM_READ_TIMEOUT": 10, "CRM_UPSTREAM_POOL_SIZE": 32, "CRM_BREAKER_FAILURES": 5,
        "CRM_BREAKER_RESET_SECONDS": 15, "CRM_OPENAPI_CACHE_SECONDS": 30,
        "CRM_TRUSTED_PROXIES": 1,  # the edge in front of the gateway (its X-Forwarded-For names the client)
    }
    wanted = env_read_by(d) - (WORKER_ONLY if component == "api" else set()) - TEST_SEAMS
    wanted -= NOT_GIVEN_TO.get(component, set()) if "sender" in d.components else set()
    unknown = wanted - set(values)
    if unknown:
        raise KeyError(f"{d.name} reads {sorted(unknown)}: give them a value in deploy/inventory.py")
    return {name: values[name] for name in sorted(wanted)}


# ---- the edge (HAProxy, deploy/edge/haproxy.cfg) -------------------------------------------------------
EDGE_IMAGE = "sfa-crm-edge"
EDGE_PORT, EDGE_METRICS_PORT = 8080, 9190
EDGE_CONFIG_DIR = "/usr/local/etc/haproxy"  # where the image, and the ConfigMap over it, put haproxy.cfg


# In Kubernetes the ingress controller connects to the edge (its NetworkPolicy admits nothing else)
# and names the client in X-Forwarded-For; its pods' addresses are in the cluster's private ranges.
CLUSTER_PROXIES = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10"


def edge_env(*, upstream: Callable[[str], str], trusted_proxies: str = "") -> dict[str, object]:
    """Every variable deploy/edge/haproxy.cfg and infra/haproxy/haproxy.sh read, as deployed (a test
    checks the list against the configuration). `upstream(service)` is that API's host:port;
    `trusted_proxies` the proxies in front whose X-Forwarded-For names the client."""
    from gateway.policy import RoutePolicy

    return {
        "EDGE_BIND": f":{EDGE_PORT}", "EDGE_METRICS_BIND": f":{EDGE_METRICS_PORT}",
        "EDGE_STATE_DIR": "/tmp/edge",  # noqa: S108 - the container's own /tmp volume
        **{f"EDGE_UPSTREAM_{name.upper()}": upstream(name) for name in sorted(RoutePolicy.load().services())},
        "CRM_JWT_SECRET": _secret("crm-jwt", "secret", DEV_JWT_SECRET),
        # RS256 instead, when the secret has a public key (the gateway then signs with private-key).
        "CRM_JWT_PUBLIC_KEY": _secret("crm-jwt", "public-key", "", optional=True),
        "CRM_JWT_ISSUER": "sfa-crm", "CRM_JWT_AUDIENCE": "sfa-crm-api",
        "EDGE_LIMIT_PER_USER": 1200, "EDGE_LIMIT_PER_ADDRESS": 6000,
        # Sign-in requests per address: an office behind one NAT signs in together at nine.
        "EDGE_LIMIT_LOGIN": 60,
        "EDGE_MAX_BODY_BYTES": 1048576, "EDGE_MAX_IMPORT_BYTES": 20971520, "EDGE_CORS_ORIGINS": "",
        "EDGE_TRUSTED_PROXIES": trusted_proxies,
        # Each replica counts its own limits here: HAProxy's peers need every replica's address in its
        # configuration, which a Deployment scaled by an HPA does not have (docs/operations.md).
        "EDGE_PEER_NAME": "local", "EDGE_PEERS": "local@127.0.0.1:10000",
    }


# ---- topics ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    retention_ms: int
    why: str


DAY_MS = 24 * 3600 * 1000
# CONTRACT §5. Partitions bound how many consumers of a group work in parallel (a worker's
# ScaledObject never goes past them); the services' TOPIC_PARTITIONS are the same numbers.
CONTRACT_TOPICS = {
    "crm.directory.v1": (3, 30, "small and slow; every service replays it to rebuild its replica"),
    "crm.leads.v1": (6, 7, "lead traffic; 6 consumers per group at most"),
    "crm.opportunities.v1": (6, 7, "deal traffic; 6 consumers per group at most"),
    "crm.orders.v1": (6, 7, "order traffic; tiers, targets and commission read it"),
    "crm.notifications.v1": (3, 7, "deliveries and their failures"),
    "marketing.leads.inbound.v1": (6, 7, "bursts from campaigns; the leads worker scales to 6"),
}


@cache
def topics() -> list[Topic]:
    out = []
    for name, (partitions, days, why) in CONTRACT_TOPICS.items():
        out.append(Topic(name, partitions, days * DAY_MS, why))
        out.append(Topic(f"{name}.dlq", 1, 30 * DAY_MS, "dead letters, kept a month for replay; one partition"))
    return out


@cache
def worker_consumers(package: str) -> list[tuple[str, str]]:
    """The worker's (group, topic) pairs, from its own worker_spec() (no database is touched)."""
    scratch = {"CRM_STATE_DIR": tempfile.mkdtemp(prefix="crm-inventory-"), "CRM_TOPIC_PREFIX": "",
               "CRM_JWT_SECRET": "inventory-only-never-verifies-anything-0123456789",
               # as deployed (env_for): the gateway waits for handover answers from these services only
               "CRM_HANDOVER_SERVICES": ",".join(s.name for s in SERVICES if s.name in RECORD_SERVICES)}
    previous = {k: os.environ.get(k) for k in scratch}
    os.environ.update(scratch)
    try:
        spec = importlib.import_module(f"{package}.worker").worker_spec()
        return sorted((c.group_id, topic) for c in spec.consumers for topic in c.handlers)
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def code_topics() -> dict[str, int]:
    """Every topic a service produces or consumes, with the partitions the code asks for."""
    out: dict[str, int] = {}
    for d in DEPLOYABLES:
        module = importlib.import_module(f"{d.package}.events")
        for topic, partitions in module.TOPIC_PARTITIONS.items():
            out[topic] = max(out.get(topic, 0), partitions)
        for _group, topic in d.consumed:
            out.setdefault(topic, 0)
    return out
