"""SQLAlchemy 2 engine, sessions, portable column types and the unit of work.

The unit of work is the only way services write: it owns one transaction, and events a
service publishes inside it go to the outbox table in that same transaction (see outbox.py).
"""
from __future__ import annotations

import contextvars
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def upsert(session: Session, table):
    """An INSERT with ON CONFLICT clauses (`.on_conflict_do_update/nothing`) for the session's
    database: PostgreSQL's and SQLite's spell them the same, but are separate constructs."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(table)


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, on both backends (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    @property
    def python_type(self):
        return dt.datetime

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; the CRM stores UTC only")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(DateTime(timezone=dialect.name == "postgresql"))


WRITES = "crm_writes"  # execution option marking a connection whose transaction will write


def normalize_url(url: str) -> str:
    """`postgresql://...` (what CloudNativePG's secrets and most tools hand out) means psycopg 3 here,
    the driver we ship, not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL lets the API and the worker read while the other writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # A transaction that reads and then writes can fail at once with SQLITE_BUSY when it must
        # upgrade its lock while another writer is active. Writing units of work therefore take the
        # write lock up front (BEGIN IMMEDIATE, SQLAlchemy's documented recipe); reads and single-
        # statement writes use a plain BEGIN, so they never queue behind a long write.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITES) else "BEGIN")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True)


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001 - readiness reports any failure as "not ready"
        return False


# Work that must commit atomically with the current request's first unit of work, registered by
# request-scoped plumbing (the Idempotency-Key record) without the service layer knowing about it.
_commit_hooks: contextvars.ContextVar[list[Callable[[Session], None]] | None] = contextvars.ContextVar(
    "crm_commit_hooks", default=None)


def run_with_commit_hook(hook: Callable[[Session], None], fn: Callable):
    """Call fn(); the first UnitOfWork committed inside it also runs hook(session) in its transaction."""
    token = _commit_hooks.set([hook])
    try:
        return fn()
    finally:
        _commit_hooks.reset(token)


class UnitOfWork:
    """One business transaction: a session, plus the events to publish if (and only if) it commits.

        with uow_factory() as uow:
            lead = uow.session.get(...)
            uow.publish(topic, event)   # goes to the outbox table, same transaction
            uow.commit()
    """

    def __init__(self, session_factory: sessionmaker, outbox_writer, on_commit: Callable[[], None] | None = None):
        self._session_factory = session_factory
        self._outbox_writer = outbox_writer
        self._on_commit = on_commit
        self.session: Session
        self._outgoing: list[tuple[str, dict]] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self._outgoing: list[tuple[str, dict]] = []
        # What this transaction remembers while it runs (rule documents, team loads): a consumer
        # batch of 500 events reads them once. One typed object, the service's own (e.g.
        # services.leads.batch.Batch); gone with the transaction, so never stale across commits.
        self.state = None
        self._before_commit: list[Callable[[], None]] = []
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # close() rolls back anything left uncommitted but, unlike rollback(), does not expire the
        # objects already loaded, so a route can still render what it read.
        self._outgoing = []
        self.session.close()

    def repository(self, kind, *args):
        """The repository `kind` on this transaction's session: kind(session, *args). Use cases ask
        for repositories here rather than building them, so that the use-case tests' fake unit of
        work (tests/unit/fakes.py) can hand out in-memory ones."""
        return kind(self.session, *args)

    def publish(self, topic: str, envelope: dict) -> None:
        """Queue an event; commit() writes it to the outbox, in the same transaction."""
        self._outgoing.append((topic, envelope))

    def before_commit(self, fn: Callable[[], None]) -> None:
        """Run fn() when commit() is called, first, in this transaction: work a consumer batch gathers
        as it goes and writes once (the orders service's ledger and its sums), in the same commit."""
        self._before_commit.append(fn)

    def commit(self) -> None:
        while self._before_commit:
            self._before_commit.pop(0)()
        published = bool(self._outgoing)
        if published:
            # Flush first so the aggregates' rows (and their locks, on PostgreSQL) come before the
            # outbox rows: two transactions on one subject then get outbox ids in commit order.
            # All of the transaction's events go in as one multi-row insert.
            self.session.flush()
            self._outbox_writer.add_many(self.session, self._outgoing)
            self._outgoing = []
        hooks = _commit_hooks.get()
        while hooks:
            hooks.pop(0)(self.session)
        self.session.commit()
        if published and self._on_commit:
            self._on_commit()

    def rollback(self) -> None:
        self.session.rollback()
        self._outgoing = []
        self._before_commit = []  # what they would have written was gathered in what is rolled back
        self.state = None


def lock_keys(uow: UnitOfWork, values) -> None:
    """Serialize transactions that touch the same business keys (dedupe keys, collision match keys)
    until commit: PostgreSQL advisory locks, taken in one sorted statement so two transactions never
    wait on each other crosswise. SQLite needs nothing: a writing unit of work holds its only write
    lock (BEGIN IMMEDIATE)."""
    values = sorted(set(values))
    if values and uow.session.get_bind().dialect.name == "postgresql":
        uow.session.execute(text("select pg_advisory_xact_lock(hashtextextended(k, 0)) "
                                 "from unnest(cast(:keys as text[])) as k order by k"), {"keys": values})


class Database:
    """Engine + session factory + unit-of-work factory of one service."""

    def __init__(self, url: str, outbox_writer, *, pool_size: int = 5):
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine.execution_options(**{WRITES: True}), expire_on_commit=False)
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.outbox_writer = outbox_writer
        # In-process wake-up for the relay when it runs in the same process as the writer.
        self.committed = threading.Event()

    def uow(self, *, readonly: bool = False) -> UnitOfWork:
        """A unit of work; `readonly=True` for routes that only read (no write lock on SQLite)."""
        return UnitOfWork(self.read_sessions if readonly else self.sessions, self.outbox_writer,
                          on_commit=self.committed.set)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name
