"""Builds the leads service's settings, database and context once per process."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from crmkit import service
from crmkit.web import ServiceContext

from . import SERVICE
from .db import KIT_TABLES, DirectoryUser

MIGRATIONS = Path(__file__).parent / "migrations"


@lru_cache(maxsize=1)
def context() -> ServiceContext:
    return service.build_context(SERVICE, KIT_TABLES, DirectoryUser)


def migrate() -> None:
    service.migrate(SERVICE, MIGRATIONS)
