"""Shared fixtures. Infrastructure is real: a Kafka broker and a PostgreSQL cluster started once
per test session (see tests/infra.py); every test gets its own topics and its own database."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.infra import JWT_SECRET, Broker, Postgres

KAFKA_PORT = int(os.environ.get("CRM_TEST_KAFKA_PORT", "19092"))
PG_PORT = int(os.environ.get("CRM_TEST_PG_PORT", "15432"))


@pytest.fixture(scope="session")
def kafka() -> Broker:
    broker = Broker(KAFKA_PORT)
    broker.start(fresh=True)
    return broker


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    pg = Postgres(PG_PORT)
    pg.start()
    return pg


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """Each test runs once on the embedded SQLite default and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.sqlite'}"
        return
    pg = request.getfixturevalue("postgres")
    url = pg.create_database()
    yield url
    pg.drop_database(url)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def jwt_secret() -> str:
    return JWT_SECRET


# ---- every event a service publishes in the tests matches its payload schema -----------------------------
@pytest.fixture(autouse=True)
def published_events_match_their_schemas(monkeypatch):
    """Each event queued in a unit of work is checked against its producer's catalog
    (crmkit.eventschema; docs/asyncapi.yaml is written from the same catalogs). An event type a
    service publishes without declaring it, or data that does not match, fails the test."""
    from crmkit.db import UnitOfWork
    from tests.support.event_catalogs import problems

    real, wrong = UnitOfWork.publish, []

    def publish(self, topic, envelope):
        found = problems(topic, envelope)
        if found:
            wrong.append(f"{envelope['type']} v{envelope['version']} on {topic}: {found}")
        return real(self, topic, envelope)

    monkeypatch.setattr(UnitOfWork, "publish", publish)
    yield
    assert not wrong, "events that do not match their payload schemas:\n" + "\n".join(wrong)


_STARTED_AT = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    import time
    item.stash[_STARTED_AT] = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of the log of every service process that is running or wrote
    during it (access lines left out): CI keeps only pytest's output, and a worker's log is often the
    only account of why it did nothing."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when == "teardown":
        return
    from infra.stack import ManagedProcess

    since = item.stash.get(_STARTED_AT, 0.0)
    seen, parts = set(), []
    for process in reversed(ManagedProcess.started):
        path = process.log_path
        # A process of the stack in use counts even if it wrote nothing: a silent worker is a suspect.
        if path in seen or not path.exists() or (path.stat().st_mtime < since and not process.alive()):
            continue
        seen.add(path)
        lines = [line for line in path.read_text(errors="replace").splitlines()
                 if '"logger": "crm.access"' not in line][-20:]  # the requests are in the test's own output
        if not lines:
            continue
        parts.append(f"--- {process.name} ({path}), last {len(lines)} lines\n"
                     + "\n".join(line[:500] for line in lines))
        if len(parts) == 12:
            break
    if parts:
        report.sections.append(("service logs", "\n".join(reversed(parts))))
