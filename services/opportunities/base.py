"""The opportunities service's declarative base, its metadata (with the kit's outbox, processed-event
and idempotency tables) and the money type, shared by its two table modules: db.py (accounts, deals
and what they carry) and day_db.py (the rep's day)."""
from __future__ import annotations

from sqlalchemy import Numeric
from sqlalchemy.orm import DeclarativeBase

from crmkit.db import new_metadata
from crmkit.tables import add_kit_tables


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)
Money = Numeric(14, 2)
