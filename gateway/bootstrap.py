"""Builds the gateway's settings, database, policy, upstream pools and sign-in policy once per process."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from crmkit.auth import TokenVerifier
from crmkit.db import Database
from crmkit.logging import configure_logging
from crmkit.migrations import upgrade
from crmkit.outbox import OutboxWriter
from crmkit.settings import load_settings
from crmkit.web import ServiceContext

from . import SERVICE
from .config import GatewayConfig, load_config
from .db import KIT_TABLES
from .policy import RoutePolicy
from .sign_in import SignInPolicy
from .upstream import Upstreams
from .user_status import UserStatusCache

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Gateway:
    """What the gateway has beyond a service's context."""

    config: GatewayConfig
    policy: RoutePolicy
    upstreams: Upstreams
    sign_in: SignInPolicy
    parts_pool: ThreadPoolExecutor  # composition fetches run here, in parallel
    user_statuses: UserStatusCache


@lru_cache(maxsize=1)
def gateway() -> Gateway:
    config = load_config()
    return Gateway(config=config, policy=RoutePolicy.load(), upstreams=Upstreams(config),
                   sign_in=SignInPolicy.from_env(),
                   parts_pool=ThreadPoolExecutor(max_workers=32, thread_name_prefix="compose"),
                   user_statuses=UserStatusCache(context().db.engine))


@lru_cache(maxsize=1)
def context() -> ServiceContext:
    from .gate import authorize  # the per-request checks, which need the context themselves

    settings = load_settings(SERVICE)
    configure_logging(SERVICE)
    # urllib3 logs every connection retry; the gateway reports the outcome (and counts it) itself.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    db = Database(settings.database_url, OutboxWriter(KIT_TABLES["outbox"], SERVICE))
    return ServiceContext(settings=settings, db=db, tables=KIT_TABLES, verifier=TokenVerifier(settings, cache_size=10_000),
                          public_paths=("/api/v1/auth/",), authorize=authorize)


def migrate() -> None:
    upgrade(MIGRATIONS, load_settings(SERVICE).database_url)
