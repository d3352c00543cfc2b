"""A fake unit of work for use-case tests without a database (as Architecture Patterns with Python's
tests/unit/test_handlers.py does): rows in dicts by (model, key), events in a list, a commit flag.
Only what the use cases under test touch; anything else fails loudly."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

from sqlalchemy import inspect as sa_inspect


class FakeSession:
    def __init__(self, rows=()):
        self.rows: dict[tuple[type, object], object] = {}
        self.added: list = []
        for row in rows:  # already stored: not new
            self.rows[(type(row), self._key(row))] = row
        self.new: list = []  # added in this transaction, not yet flushed (as Session.new)
        self.flushes = 0  # the database bumps versions at flush: an event must come after it

    @staticmethod
    def _key(row):
        """The row's primary key, as session.get takes it: one value, or a tuple for a composite key.
        A plain object standing in for a row is keyed by the first of its id-like attributes."""
        mapper = sa_inspect(type(row), raiseerr=False)
        if mapper is None:
            return next(getattr(row, name) for name in ("id", "handover_id", "team_id", "name") if hasattr(row, name))
        columns = mapper.primary_key
        values = tuple(getattr(row, column.key) for column in columns)
        return values[0] if len(values) == 1 else values

    def add(self, row) -> None:
        self.rows[(type(row), self._key(row))] = row
        self.added.append(row)
        if row not in self.new:
            self.new.append(row)

    def get(self, model, key, **_):
        return self.rows.get((model, key))

    @property
    @contextlib.contextmanager
    def no_autoflush(self):
        yield self

    def get_bind(self):
        return SimpleNamespace(dialect=SimpleNamespace(name="fake"))  # lock_keys takes nothing

    def flush(self) -> None:
        self.new = []
        self.flushes += 1


class FakeUnitOfWork:
    """repositories: the fakes to hand out for uow.repository(kind, ...), by the real kind; each is
    built as fake(session, *args), so it reads and writes the same in-memory rows."""

    def __init__(self, rows=(), repositories: dict | None = None):
        self.session = FakeSession(rows)
        self.repositories = repositories or {}
        self.published: list[tuple[str, dict]] = []
        self.flushes_before: list[int] = []  # for each published event, the flushes before it
        self.committed = False
        self.state = None

    def repository(self, kind, *args):
        if kind not in self.repositories:
            raise AssertionError(f"this test gave the unit of work no fake {kind.__name__}")
        return self.repositories[kind](self.session, *args)

    def rows_of(self, model) -> list:
        return [row for (kind, _key), row in self.session.rows.items() if kind is model]

    def publish(self, topic: str, envelope: dict) -> None:
        from tests.support.event_catalogs import problems

        # As the real unit of work is checked in every test (tests/conftest.py): the event matches
        # its payload schema and the JSON Schema docs/asyncapi.yaml publishes.
        assert problems(topic, envelope) is None, problems(topic, envelope)
        self.published.append((topic, envelope))
        self.flushes_before.append(self.session.flushes)

    def commit(self) -> None:
        self.committed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeVisitProgress:
    """services/opportunities/visit_progress.VisitProgressRepository over the fake session's rows."""

    def __init__(self, session):
        self.session = session

    def _rows(self, model) -> list:
        return [row for (kind, _key), row in self.session.rows.items() if kind is model]

    def lock(self, owner_id, account_id) -> None:
        pass  # one test, one thread

    def done_visits(self, owner_id, account_id, since, until) -> list:
        from services.opportunities.day_db import Visit

        return [v for v in self._rows(Visit) if (v.owner_id, v.account_id, v.status) == (owner_id, account_id, "done")
                and (since is None or v.checked_in_at >= since) and (until is None or v.checked_in_at <= until)]

    def progress(self, owner_id, account_id, start, end) -> list:
        from services.opportunities.day_db import OrderFact, StageMove

        return [*((m.moved_at, m.team_id) for m in self._rows(StageMove)
                  if (m.owner_id, m.account_id) == (owner_id, account_id) and start < m.moved_at <= end),
                *((o.confirmed_at, o.team_id) for o in self._rows(OrderFact)
                  if (o.owner_id, o.account_id) == (owner_id, account_id) and o.cancelled_at is None
                  and o.confirmed_at is not None and start < o.confirmed_at <= end)]
