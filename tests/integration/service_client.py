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
    package = bootstrap.__name__.rsplit(".", 1)[0]
    api = __import__(package + ".api", fromlist=["create_app"])
    models = __import__(package + ".db", fromlist=["DirectoryUser", "DirectoryTeam"])
    try:
        yield Client(api.create_app().test_client(), Directory(bootstrap.context().db, models))
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


class Directory:
    """The service's directory replica, written as crm.directory.v1 would: the service checks every
    token against it (a user it does not know, or a stale token, is 401), so each test user is in it."""

    def __init__(self, db, models):
        self.db, self.user_model, self.team_model = db, models.DirectoryUser, models.DirectoryTeam

    def put_user(self, user: str, role: str, team: str | None, *, active: bool = True, token_version: int = 1):
        with self.db.uow() as uow:
            row = uow.session.get(self.user_model, user) or self.user_model(id=user)
            row.role, row.team_id, row.active, row.token_version, row.name = role, team, active, token_version, user
            uow.session.add(row)
            uow.commit()

    def put_team(self, team: str, manager: str | None, parent: str | None = None):
        with self.db.uow() as uow:
            row = uow.session.get(self.team_model, team) or self.team_model(id=team)
            row.manager_id, row.parent_team_id, row.name = manager, parent, team
            uow.session.add(row)
            uow.commit()


class Client:
    def __init__(self, client, directory: Directory):
        self.client, self.directory = client, directory

    def as_(self, user, role, teams=(), manages=(), *, register: bool = True, token_version: int = 1):
        """A caller with a token of our making; `register` puts them (and the teams they manage) in
        the replica first, as the gateway's events would."""
        if register:
            for team in teams:
                if team not in manages:
                    self.directory.put_team(team, None) if not self._team_exists(team) else None
            for team in manages:
                self.directory.put_team(team, user)
            self.directory.put_user(user, role, teams[0] if teams else None, token_version=token_version)
        token = issue_token(secret=JWT_SECRET, user_id=user, role=role, teams=teams, manages=manages,
                            extra={"ver": token_version})
        return As(self.client, {"Authorization": f"Bearer {token}"})

    def _team_exists(self, team: str) -> bool:
        with self.directory.db.uow(readonly=True) as uow:
            return uow.session.get(self.directory.team_model, team) is not None


class As:
    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def __getattr__(self, method):
        def call(path, headers=None, **kw):
            return getattr(self.client, method)(f"/api/v1{path}", headers={**self.headers, **(headers or {})}, **kw)
        return call


def deliver(table: dict, uow, envelope: dict):
    """Apply one event as the service's consumer would: parsed from its bytes (so the handler gets
    what a consumer gets: the time as a datetime, say), then through its dispatch table."""
    from crmkit.consumer import Dispatch
    from crmkit.events import encode, parse_envelope

    envelope = parse_envelope(encode(envelope))
    return Dispatch(table).handler_for(envelope)(uow, envelope)
