"""A fake unit of work for use-case tests without a database (as Architecture Patterns with Python's
tests/unit/test_handlers.py does): rows in dicts by (model, key), events in a list, a commit flag.
Only what the use cases under test touch; anything else fails loudly."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace


class FakeSession:
    def __init__(self, rows=()):
        self.rows: dict[tuple[type, object], object] = {}
        self.added: list = []
        for row in rows:  # already stored: not new
            self.rows[(type(row), self._key(row))] = row
        self.new: list = []  # added in this transaction, not yet flushed (as Session.new)

    @staticmethod
    def _key(row):
        for name in ("id", "handover_id", "team_id", "name"):
            if hasattr(row, name):
                return getattr(row, name)
        raise TypeError(f"no key for {row!r}")

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


class FakeUnitOfWork:
    def __init__(self, rows=()):
        self.session = FakeSession(rows)
        self.published: list[tuple[str, dict]] = []
        self.committed = False
        self.state = None

    def publish(self, topic: str, envelope: dict) -> None:
        from tests.support.event_catalogs import problems

        # As the real unit of work is checked in every test (tests/conftest.py): the event matches
        # its payload schema and the JSON Schema docs/asyncapi.yaml publishes.
        assert problems(topic, envelope) is None, problems(topic, envelope)
        self.published.append((topic, envelope))

    def commit(self) -> None:
        self.committed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
