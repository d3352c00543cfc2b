"""End-to-end fixtures: the leads API under gunicorn and its worker as separate processes, on a
fresh PostgreSQL database, the test Kafka broker and topics of their own."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest
import requests

from crmkit.auth import issue_token
from infra.stack import SERVICES, ManagedProcess, api_process, migrate, service_env, worker_process
from tests.e2e.gateway_stack import free_port
from tests.infra import JWT_SECRET

LEADS = next(s for s in SERVICES if s.name == "leads")


@dataclass
class LeadsStack:
    base_url: str
    env: dict
    api: ManagedProcess
    worker: ManagedProcess
    database_url: str
    topic_prefix: str
    bootstrap: str
    state_dir: object

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def worker_metrics_port(self) -> int:
        return int(self.worker.env["WORKER_METRICS_PORT"])

    def restart_worker(self) -> None:
        self.worker = worker_process(LEADS, self.env, state_dir=self.state_dir, metrics_port=free_port()).start()
        self.worker.wait_healthy()

    def sql(self, query: str, *params):
        dsn = self.database_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, statement: str, *params) -> None:
        dsn = self.database_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn:
            conn.execute(statement, params)

    def session(self, user: str, role: str, teams=(), manages=()) -> requests.Session:
        """A caller with a token of our making, put into the service's directory replica first (as
        crm.directory.v1 would): the service refuses tokens of users its replica does not know."""
        team = teams[0] if teams else None
        self.execute("insert into directory_users (id, name, role, team_id, active, token_version, updated_at) "
                 "values (%s, %s, %s, %s, true, 1, now()) on conflict (id) do update set role = excluded.role, "
                 "team_id = excluded.team_id, active = true, token_version = 1", user, user, role, team)
        for managed in manages:
            self.execute("insert into directory_teams (id, name, manager_id, updated_at) values (%s, %s, %s, now()) "
                     "on conflict (id) do update set manager_id = excluded.manager_id", managed, managed, user)
        s = requests.Session()
        s.headers["Authorization"] = "Bearer " + issue_token(
            secret=JWT_SECRET, user_id=user, name=user, role=role, teams=teams, manages=manages, extra={"ver": 1})
        return s


@pytest.fixture
def leads_stack(kafka, postgres, topic_prefix, tmp_path):
    database_url = postgres.create_database()
    env = service_env({"LEADS_DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                       "CRM_TOPIC_PREFIX": topic_prefix, "CRM_JWT_SECRET": JWT_SECRET}, state_dir=tmp_path)
    migrate(LEADS, env)
    port = free_port()
    api = api_process(LEADS, env, state_dir=tmp_path, port=port).start()
    worker = worker_process(LEADS, env, state_dir=tmp_path, metrics_port=free_port()).start()
    stack = LeadsStack(base_url=f"http://127.0.0.1:{port}/api/v1", env=env, api=api, worker=worker,
                       database_url=database_url, topic_prefix=topic_prefix, bootstrap=kafka.bootstrap,
                       state_dir=tmp_path)
    try:
        api.wait_healthy()
        worker.wait_healthy()
        yield stack
    finally:
        stack.api.stop()
        stack.worker.stop()
        postgres.drop_database(database_url)


@pytest.fixture(scope="module")
def crm(kafka, postgres, tmp_path_factory):
    """The gateway in front of the leads service, with an organisation (tests/e2e/gateway_stack.py)."""
    from tests.e2e.gateway_stack import start_crm, stop_crm

    stack = start_crm(kafka, postgres, tmp_path_factory.mktemp("crm"))
    try:
        yield stack
    finally:
        stop_crm(stack, postgres)
