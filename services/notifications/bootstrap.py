"""Builds the notifications service's settings, database and context once per process."""
from __future__ import annotations

from pathlib import Path

from crmkit import service

from . import SERVICE
from .db import KIT_TABLES, DirectoryTeam, DirectoryUser

MIGRATIONS = Path(__file__).parent / "migrations"
context, migrate = service.bootstrap(SERVICE, KIT_TABLES, DirectoryUser, DirectoryTeam, MIGRATIONS)
