"""Alembic, driven from code: each service keeps its own `migrations/` folder and version table.

A service's migrations/env.py is two lines: `run_env(metadata)`. `upgrade(...)` is what the
service's `migrate` command (and the Kubernetes migration Job) runs.
"""
from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text

from .db import make_engine


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, url), revision)


def run_env(target_metadata: MetaData) -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together (each API pod migrates in an init container) take turns:
                # the first applies the migrations, the others then find nothing to do. Held until
                # the connection closes.
                connection.execute(text("select pg_advisory_lock(hashtext('crm-alembic-migrations'))"))
                connection.commit()
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
