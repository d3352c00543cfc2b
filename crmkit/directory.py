"""What a service knows of the directory on its own, from its replica of crm.directory.v1: who is
deactivated, and each user's current role. The gateway refuses a stale token at once; a service
called directly (bypassing the gateway) refuses it too, within `refresh_seconds` of its replica
learning of the change: a deactivated user, or a token whose role the directory no longer gives.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, mapped_column

from .auth import Principal, Unauthorized
from .consumer import Reject
from .db import UTCDateTime, utcnow


class DirectoryGuard:
    def __init__(self, load: Callable[[], dict[str, tuple[str, bool]]], refresh_seconds: float = 2.0):
        self._load = load  # user id -> (role, active), for every user the replica knows
        self.refresh_seconds = refresh_seconds
        self._users: dict[str, tuple[str, bool]] | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _current(self) -> dict[str, tuple[str, bool]]:
        if time.monotonic() - self._loaded_at < self.refresh_seconds and self._users is not None:
            return self._users
        # Until the first load has succeeded every request waits for it (an empty answer would let
        # everyone through); after that, one thread refreshes while the others use the last answer.
        if self._lock.acquire(blocking=self._users is None):
            try:
                if time.monotonic() - self._loaded_at >= self.refresh_seconds or self._users is None:
                    self._users = self._load()
                    self._loaded_at = time.monotonic()
            finally:
                self._lock.release()
        return self._users

    def check(self, principal: Principal) -> None:
        known = self._current().get(principal.user_id)
        if known is None:
            return  # not replicated (yet): the signature and the gateway's own check stand
        role, active = known
        if not active:
            raise Unauthorized("this user is not active")
        if role != principal.role:
            raise Unauthorized("the token's role is no longer the user's role; sign in again")


# ---- the replica itself: the same two tables and the same upkeep in every service ------------------
class DirectoryUserColumns:
    """Mixin for a service's `directory_users` replica table: `class DirectoryUser(DirectoryUserColumns, Base)`."""

    __tablename__ = "directory_users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)
    region: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DirectoryTeamColumns:
    __tablename__ = "directory_teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    manager_id: Mapped[str | None] = mapped_column(String(64))
    parent_team_id: Mapped[str | None] = mapped_column(String(64))
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


USER_EVENTS = ("user.created", "user.updated", "user.deactivated")
TEAM_EVENTS = ("team.created", "team.updated")
HANDOVER_REQUESTED = "handover.requested"


def apply_directory_event(uow, envelope: dict, user_model, team_model) -> None:
    """Keep the replica current from one crm.directory.v1 event (handover requests are the
    service's own business and are not handled here)."""
    kind, data = envelope["type"], envelope["data"]
    if kind in USER_EVENTS:
        _upsert(uow, user_model, data.get("user") or {}, ("name", "role", "team_id", "region", "active"))
    elif kind in TEAM_EVENTS:
        _upsert(uow, team_model, data.get("team") or {}, ("name", "manager_id", "parent_team_id"))


def _upsert(uow, model, record: dict, columns: tuple[str, ...]) -> None:
    if not record.get("id"):
        raise Reject(f"{model.__tablename__} event without an id")
    row = uow.session.get(model, str(record["id"])) or model(id=str(record["id"]))
    for column in columns:
        if column in record:
            setattr(row, column, record[column])
    row.updated_at = utcnow()
    uow.session.add(row)
    uow.cache.clear()  # team membership may have changed


def replica_guard(db, user_model, refresh_seconds: float = 2.0) -> DirectoryGuard:
    """A DirectoryGuard reading the service's own replica table."""

    def load() -> dict[str, tuple[str, bool]]:
        with db.uow(readonly=True) as uow:
            rows = uow.session.execute(select(user_model.id, user_model.role, user_model.active))
            return {row.id: (row.role, bool(row.active)) for row in rows}

    return DirectoryGuard(load, refresh_seconds)


def handover_request(envelope: dict) -> tuple[str, str, str]:
    """(handover_id, from_user_id, to_user_id) of a handover.requested event, or Reject."""
    data = envelope["data"]
    try:
        return data["handover_id"], str(data["from_user_id"]), str(data["to_user_id"])
    except KeyError as exc:
        raise Reject(f"handover.requested without {exc}") from None
