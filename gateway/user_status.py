"""Is the caller still active, and is their token current? Asked on every request, so each gateway
process keeps the answers in memory, and forgets one the moment it changes anywhere:

On PostgreSQL every change to a user's status sends NOTIFY crm_directory_users (in the changing
transaction, so it arrives at commit) and each process listens on its own connection. Until the
listener is connected, and on SQLite, nothing is cached: every request asks the database. A
generation counter stops a request that read before a change from caching what it read.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine

from crmkit.db import UnitOfWork
from crmkit.teams import TeamNode, managed_teams

from .db import Team, User

log = logging.getLogger(__name__)

CHANNEL = "crm_directory_users"
ENTRY_TTL = 60.0  # a backstop: even a listener that silently lost its connection is stale at most this long
PING_EVERY = 15.0  # the listener proves its connection alive this often


_caches: weakref.WeakSet[UserStatusCache] = weakref.WeakSet()  # this process's (one, outside tests)


def announce_change(uow: UnitOfWork, user_id: uuid.UUID) -> None:
    """Make every gateway process forget this user's status once the change commits: this process
    at once (after_commit), the others through NOTIFY, milliseconds later."""
    if uow.session.get_bind().dialect.name == "postgresql":
        uow.session.execute(text("select pg_notify(:channel, :user_id)"), {"channel": CHANNEL, "user_id": str(user_id)})

    def forget_here(_session) -> None:
        for cache in list(_caches):
            cache._forget(str(user_id))

    event.listen(uow.session, "after_commit", forget_here, once=True)


@dataclass(frozen=True)
class UserStatus:
    active: bool
    token_version: int
    role: str
    team_id: uuid.UUID | None
    manages: frozenset[str]  # team ids (strings, as in tokens), sub-teams included


class UserStatusCache:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._known: dict[uuid.UUID, tuple[UserStatus, float]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._listening = False
        self._stop = threading.Event()
        _caches.add(self)
        if engine.dialect.name == "postgresql":
            threading.Thread(target=self._listen, name="user-status-listener", daemon=True).start()

    def status(self, open_uow: Callable[[], UnitOfWork], user_id: uuid.UUID) -> UserStatus | None:
        """The user's status and claims as the directory has them now, or None if there is no such
        user. `open_uow` is only called (a session only opened) when the answer is not cached. A
        team change that alters someone's managed teams also bumps their token version and
        announces the change, so a cached `manages` is forgotten with it."""
        with self._lock:
            cached = self._known.get(user_id) if self._listening else None
            generation = self._generation
        if cached is not None and time.monotonic() - cached[1] < ENTRY_TTL:
            return cached[0]
        with open_uow() as uow:
            row = uow.session.execute(select(User.active, User.token_version, User.role, User.team_id)
                                      .where(User.id == user_id)).first()
            teams = [TeamNode(*t) for t in uow.session.execute(
                select(Team.id, Team.manager_id, Team.parent_team_id))] if row is not None else []
        if row is None:
            return None
        found = UserStatus(active=bool(row.active), token_version=int(row.token_version), role=row.role,
                           team_id=row.team_id, manages=frozenset(str(t) for t in managed_teams(user_id, teams)))
        with self._lock:
            if self._listening and generation == self._generation:
                self._known[user_id] = (found, time.monotonic())
        return found

    def _forget(self, user_id: str | None) -> None:
        with self._lock:
            self._generation += 1
            if user_id is None:
                self._known.clear()
            else:
                try:
                    self._known.pop(uuid.UUID(user_id), None)
                except ValueError:
                    self._known.clear()

    def _listen(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                # TCP keepalives and a periodic ping: a connection dropped silently (a NAT or load
                # balancer idle timeout) must end in an error, not in a listener that hears nothing.
                with psycopg.connect(url, autocommit=True, application_name="crm-gateway-user-status",
                                     keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                                     tcp_user_timeout=20000) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._forget(None)  # whatever changed while we were not listening
                    with self._lock:
                        self._listening = True
                    pinged = time.monotonic()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._forget(notice.payload)
                        if time.monotonic() - pinged > PING_EVERY:
                            conn.execute("select 1")
                            pinged = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - reconnect; meanwhile every request asks the database
                log.warning("user status listener lost its connection (%r); not caching until it is back", exc)
            with self._lock:
                self._listening = False
                self._known.clear()
            if self._stop.wait(1.0):
                return

    def stop(self) -> None:
        self._stop.set()
