"""The CRM as deployed, for tests through the gateway: the gateway and every service built so far,
each an API under gunicorn plus a worker, on their own PostgreSQL databases and the test Kafka
broker, and an organisation created through the gateway's own directory API."""
from __future__ import annotations

import random
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import requests

from infra.stack import (
    GATEWAY,
    SERVICES,
    ManagedProcess,
    api_process,
    gateway_env,
    migrate,
    service_env,
    worker_process,
)
from tests.infra import JWT_SECRET, wait_for

LEADS = next(s for s in SERVICES if s.name == "leads")
BY_NAME = {s.name: s for s in [*SERVICES, GATEWAY]}
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "password-for-tests"


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never handed out twice in this test run, and below the kernel's
    ephemeral range (32768+), so that an outgoing connection does not take it as its source port
    between now and the moment the process we start binds it. Asking the kernel for port 0 gave
    ports from that very range, and the same port again once the first was released: the gateway
    once got the port a worker's metrics server was about to take."""
    for _ in range(10_000):
        port = random.randint(21000, 24999)  # clear of the benchmarks' fixed ports (25432, 29092)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port left in 21000-24999")


@dataclass
class Crm:
    state_dir: Path
    env: dict  # the services' environment
    gateway_env: dict
    ports: dict[str, int]
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)  # service name -> its database URL
    topic_prefix: str = ""
    users: dict[str, dict] = field(default_factory=dict)  # name -> the user as the directory returned it
    teams: dict[str, dict] = field(default_factory=dict)
    edge: object | None = None  # the HAProxy edge on the public port (tests/e2e/edge_stack.py), if started
    smtp: object | None = None  # the mail relay the notifications service sends to (tests/support/smtp.py)
    receiver: object | None = None  # a webhook receiver the notifications service may call (tests/support/receiver.py)

    def sql(self, database: str, query: str, *params):
        url = self.databases[database]
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            return conn.execute(query, params).fetchall()

    @property
    def url(self) -> str:
        """The public port: the edge."""
        return self.edge.url

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def leads_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['leads']}"

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def launch(self, name: str) -> ManagedProcess:
        """Start a process ("leads-api", "gateway-worker", "notifications-sender") without waiting for it to be up."""
        service = BY_NAME[name.rsplit("-", 1)[0]]
        env = self.gateway_env if service is GATEWAY else self.env
        if name.endswith("-worker"):
            proc = worker_process(service, env, state_dir=self.state_dir, metrics_port=free_port())
        elif name.endswith("-sender"):
            proc = worker_process(service, env, state_dir=self.state_dir, metrics_port=free_port(), part="sender")
        else:
            proc = api_process(service, env, state_dir=self.state_dir, port=self.ports[service.name],
                               metrics_port=self.ports["gateway-metrics"] if service is GATEWAY else None)
        self.procs[name] = proc.start()
        return proc

    def start(self, name: str) -> None:
        self.launch(name).wait_healthy()

    def stop(self, name: str) -> None:
        self.procs[name].stop()

    def session(self, token: str | None = None) -> requests.Session:
        s = requests.Session()
        if token:
            s.headers["Authorization"] = f"Bearer {token}"
        return s

    def token(self, username: str, password: str = PASSWORD) -> str:
        r = requests.post(f"{self.url}/api/v1/auth/token", json={"username": username, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def as_(self, name: str) -> requests.Session:
        return self.session(self.token(name, ADMIN_PASSWORD if name == "admin" else PASSWORD))

    def api(self, path: str) -> str:
        return f"{self.url}/api/v1{path}"


# name, role, team (by name); "north" sits below "east", so east's manager manages both.
ORG_TEAMS = [("east", None), ("north", "east"), ("west", None)]
ORG_USERS = [("exec", "executive", None), ("mgr-east", "manager", "east"), ("mgr-west", "manager", "west"),
             ("ann", "rep", "east"), ("amy", "rep", "east"), ("nora", "rep", "north"), ("bo", "rep", "west"),
             ("mkt", "marketing", None), ("svc", "service", None)]
TEAM_MANAGERS = {"east": "mgr-east", "west": "mgr-west"}


def build_org(crm: Crm) -> None:
    admin = crm.as_("admin")
    crm.users["admin"] = admin.get(crm.api("/me")).json()
    for name, parent in ORG_TEAMS:
        body = {"name": f"{name}-{uuid.uuid4().hex[:6]}", "parent_team_id": crm.teams[parent]["id"] if parent else None}
        r = admin.post(crm.api("/teams"), json=body)
        assert r.status_code == 201, r.text
        crm.teams[name] = r.json()
    for name, role, team in ORG_USERS:
        r = admin.post(crm.api("/users"), json={"username": name, "password": PASSWORD, "name": name.title(),
                                                 "role": role, "team_id": crm.teams[team]["id"] if team else None})
        assert r.status_code == 201, r.text
        crm.users[name] = r.json()
    for team, manager in TEAM_MANAGERS.items():
        current = admin.get(crm.api(f"/teams/{crm.teams[team]['id']}"))
        r = admin.patch(crm.api(f"/teams/{crm.teams[team]['id']}"), json={"manager_id": crm.users[manager]["id"]},
                        headers={"If-Match": current.headers["ETag"]})
        assert r.status_code == 200, r.text


def start_crm(kafka, postgres, state_dir: Path, *, extra_env: dict | None = None, db: str = "postgres") -> Crm:
    """db="sqlite": every service on its own SQLite file, as `make run` runs by default. HAProxy is on
    the public port (crm.url), in front of the services and the Python gateway, as deployed."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    from tests.support.receiver import Receiver
    from tests.support.smtp import SmtpServer

    smtp, receiver = SmtpServer().start(), Receiver().start()
    if db == "sqlite":
        databases = {s.name: f"sqlite:///{state_dir}/{s.name}.db" for s in [*SERVICES, GATEWAY]}
    else:
        databases = {s.name: postgres.create_database() for s in [*SERVICES, GATEWAY]}
    ports = {s.name: free_port() for s in [*SERVICES, GATEWAY]} | {"gateway-metrics": free_port()}
    env = service_env({**{f"{name.upper()}_DATABASE_URL": url for name, url in databases.items()},
                       "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "CRM_TOPIC_PREFIX": prefix,
                       "CRM_JWT_SECRET": JWT_SECRET, "OPPORTUNITIES_TIER_INTERVAL_SECONDS": "1",
                       "OPPORTUNITIES_VISIT_SWEEP_SECONDS": "0.5",
                       # The schedules' clock is the test's (crmkit.clock): no file, the wall clock.
                       "CRM_CLOCK_FILE": str(state_dir / "clock"), "ORDERS_ALERT_INTERVAL_SECONDS": "0.5",
                       "NOTIFICATIONS_REMINDER_INTERVAL_SECONDS": "0.5", "NOTIFICATIONS_SEND_INTERVAL_SECONDS": "0.2",
                       "NOTIFICATIONS_AGENDA_INTERVAL_SECONDS": "0.5", "CRM_LANGUAGE": "en", **smtp.env,
                       # The test's receiver is on this machine: exempt from the SSRF guard, it alone.
                       "NOTIFICATIONS_WEBHOOK_ALLOW": receiver.allow, "NOTIFICATIONS_WEBHOOK_INTERVAL_SECONDS": "0.2",
                       # On PostgreSQL the senders run as deployed, a process of their own; on SQLite
                       # in the worker, as under make run.
                       "NOTIFICATIONS_SENDERS_IN_WORKER": "1" if db == "sqlite" else "0"},
                      state_dir=state_dir)
    gw_env = gateway_env({**env, "CRM_ADMIN_PASSWORD": ADMIN_PASSWORD, "CRM_BREAKER_RESET_SECONDS": "2",
                          "CRM_CORS_ORIGINS": "https://crm.example.com",  # the edge's list (edge_env)
                          "CRM_TRUSTED_PROXIES": "1", **(extra_env or {})}, SERVICES, ports)
    crm = Crm(state_dir=state_dir, env=env, gateway_env=gw_env, ports=ports, databases=databases, topic_prefix=prefix,
              smtp=smtp, receiver=receiver)
    # Each module's stack is started afresh: migrations and processes side by side, not one after
    # another (they are mostly interpreter start-up and imports, waiting on each other for nothing).
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda s: migrate(s, gw_env if s is GATEWAY else env), [*SERVICES, GATEWAY]))
    try:
        launched = [crm.launch(f"{service.name}-{part}") for service in [*SERVICES, GATEWAY]
                    for part in ("api", "worker")]
        if db != "sqlite":
            launched.append(crm.launch("notifications-sender"))
        for proc in launched:
            proc.wait_healthy()
        from tests.e2e.edge_stack import start_edge

        crm.edge = start_edge(crm, state_dir / "edge")
        build_org(crm)
    except BaseException:
        stop_crm(crm, postgres)  # the fixture never gets a stack to stop: nothing may outlive the failure
        raise
    return crm


def stop_crm(crm: Crm, postgres) -> None:
    if crm.edge is not None:
        crm.edge.stop()
    if crm.smtp is not None:
        crm.smtp.stop()
    if crm.receiver is not None:
        crm.receiver.stop()
    for proc in crm.procs.values():  # all asked at once: each takes a moment to close its consumers
        proc.terminate()
    for proc in crm.procs.values():
        proc.stop()
    for url in crm.databases.values():
        if not url.startswith("sqlite"):
            postgres.drop_database(url)


def wait_replicated(crm: Crm, *user_ids: str, service: str = "leads") -> None:
    """Until a service's directory replica knows the users (crm.directory.v1 is asynchronous)."""
    wait_for(lambda: crm.sql(service, "select count(*) from directory_users where id = any(%s)",
                             list(user_ids))[0][0] == len(user_ids), what=f"users {user_ids} replicated to {service}")
