"""A service's API in-process (Flask test client), called as any user with a token of our making."""
from __future__ import annotations

from contextlib import contextmanager

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crmkit.auth import issue_token
from crmkit.db import make_engine
from crmkit.migrations import alembic_config
from tests.infra import JWT_SECRET


@contextmanager
def service_client(bootstrap, service: str, database_url: str, topic_prefix: str, monkeypatch):
    """Migrate the service's database and yield a Client of its app; `bootstrap` is its module."""
    monkeypatch.setenv(f"{service.upper()}_DATABASE_URL", database_url)
    monkeypatch.setenv("CRM_TOPIC_PREFIX", topic_prefix)
    monkeypatch.setenv("CRM_JWT_SECRET", JWT_SECRET)
    bootstrap.context.cache_clear()
    bootstrap.migrate()
    api = __import__(bootstrap.__name__.rsplit(".", 1)[0] + ".api", fromlist=["create_app"])
    try:
        yield Client(api.create_app().test_client())
    finally:
        bootstrap.context().db.engine.dispose()
        bootstrap.context.cache_clear()


def assert_migrations_match(migrations, metadata, database_url: str) -> None:
    """Alembic's head creates exactly the tables the code maps (no drift on either backend)."""
    command.upgrade(alembic_config(migrations, database_url), "head")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


class Client:
    def __init__(self, client):
        self.client = client

    def as_(self, user, role, teams=(), manages=()):
        token = issue_token(secret=JWT_SECRET, user_id=user, role=role, teams=teams, manages=manages)
        return As(self.client, {"Authorization": f"Bearer {token}"})


class As:
    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def __getattr__(self, method):
        def call(path, headers=None, **kw):
            return getattr(self.client, method)(f"/api/v1{path}", headers={**self.headers, **(headers or {})}, **kw)
        return call
