"""What every record-owning service does the same way at start-up: its context (settings,
database with outbox, token verifier, directory guard) and its command line."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .auth import TokenVerifier
from .db import Database
from .directory import replica_guard
from .logging import configure_logging
from .migrations import upgrade
from .outbox import OutboxWriter
from .settings import load_settings
from .web import ServiceContext


def build_context(service: str, tables: dict, directory_user, directory_team) -> ServiceContext:
    settings = load_settings(service)
    configure_logging(service)
    db = Database(settings.database_url, OutboxWriter(tables["outbox"], service))
    return ServiceContext(settings=settings, db=db, tables=tables, verifier=TokenVerifier(settings),
                          authorize=replica_guard(db, directory_user, directory_team).check)


def migrate(service: str, migrations: Path) -> None:
    upgrade(migrations, load_settings(service).database_url)


def bootstrap(service: str, tables: dict, directory_user, directory_team, migrations: Path
              ) -> tuple[Callable[[], ServiceContext], Callable[[], None]]:
    """A service's `context()` (built once per process; `context.cache_clear()` rebuilds it) and
    its `migrate()`."""

    @lru_cache(maxsize=1)
    def context() -> ServiceContext:
        return build_context(service, tables, directory_user, directory_team)

    return context, lambda: migrate(service, migrations)


def command_line(package: str, argv: list[str], default_port: int,
                 more: dict[str, Callable[[], None]] | None = None) -> None:
    """`python -m <package> migrate|worker|api [port]` (api: a development server; production uses
    gunicorn), and the package's `more` commands."""
    command = argv[1] if len(argv) > 1 else ""
    more = more or {}
    if command == "migrate":
        importlib.import_module(f"{package}.bootstrap").migrate()
    elif command == "worker":
        importlib.import_module(f"{package}.worker").main()
    elif command == "api":
        app = importlib.import_module(f"{package}.api").create_app()
        app.run(port=int(argv[2]) if len(argv) > 2 else default_port)
    elif command in more:
        more[command]()
    else:
        sys.exit(f"usage: python -m {package} {'|'.join(['migrate', 'worker', *more, 'api'])} [port]")
