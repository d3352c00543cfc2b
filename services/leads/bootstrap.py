"""Builds the leads service's settings, database and context once per process."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import select

from crmkit.auth import TokenVerifier
from crmkit.db import Database
from crmkit.directory import DirectoryGuard
from crmkit.logging import configure_logging
from crmkit.migrations import upgrade
from crmkit.outbox import OutboxWriter
from crmkit.settings import load_settings
from crmkit.web import ServiceContext

from . import SERVICE
from .db import KIT_TABLES, DirectoryUser

MIGRATIONS = Path(__file__).parent / "migrations"


@lru_cache(maxsize=1)
def context() -> ServiceContext:
    settings = load_settings(SERVICE)
    configure_logging(SERVICE)
    db = Database(settings.database_url, OutboxWriter(KIT_TABLES["outbox"], SERVICE))

    def directory() -> dict[str, tuple[str, bool]]:
        with db.uow(readonly=True) as uow:
            rows = uow.session.execute(select(DirectoryUser.id, DirectoryUser.role, DirectoryUser.active))
            return {row.id: (row.role, bool(row.active)) for row in rows}

    return ServiceContext(settings=settings, db=db, tables=KIT_TABLES, verifier=TokenVerifier(settings),
                          authorize=DirectoryGuard(directory).check)


def migrate() -> None:
    upgrade(MIGRATIONS, load_settings(SERVICE).database_url)
