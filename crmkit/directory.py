"""What a service knows of the directory on its own, from its replica of crm.directory.v1, and the
second lock it puts on every request (CONTRACT §2: bypassing the gateway gains nothing).

A token is only a signed claim. Each service checks it against its replica: the user exists, is
active, the token's version is the current one (a password reset, a role or team change, a
deactivation ends every token issued before), and the role, team and managed teams are the
replica's: a validly signed token claiming anything else is refused, as the gateway refuses it on
its own routes (since the HAProxy edge sends service routes straight to the services, this is the
check those requests get). A token newer than the replica (a user created or changed a moment ago,
whose event is still on its way) waits briefly for the replica to catch up.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Boolean, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from .auth import Principal, Unauthorized
from .consumer import Reject
from .db import UTCDateTime, lock_keys, utcnow
from .directory_events import HANDOVER_REQUESTED, TEAM_EVENTS, USER_EVENTS
from .problems import Problem
from .teams import TeamNode, managed_teams


@dataclass(frozen=True)
class KnownUser:
    role: str
    active: bool
    team_id: str | None
    token_version: int | None  # None: replicated before versions were (then only the gateway checks it)
    manages: tuple[str, ...] = ()


REREAD_SECONDS = 0.1  # the most often a refusal may make the replica be read again


class DirectoryGuard:
    def __init__(self, load: Callable[[], dict[str, KnownUser]], refresh_seconds: float = 2.0,
                 catch_up_seconds: float = 3.0):
        self._load = load  # user id -> KnownUser, for every user the replica knows
        self.refresh_seconds = refresh_seconds
        self.catch_up_seconds = catch_up_seconds
        self._users: dict[str, KnownUser] | None = None
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._waiters = threading.BoundedSemaphore(2)

    def _current(self, *, fresh_within: float | None = None, wait: bool = True) -> dict[str, KnownUser]:
        max_age = self.refresh_seconds if fresh_within is None else fresh_within
        if time.monotonic() - self._loaded_at < max_age and self._users is not None:
            return self._users
        # Until the first load has succeeded every request waits for it (an empty answer would let
        # everyone through); after that, one thread refreshes while the others use the last answer,
        # except a request that asked for a fresh answer and may wait, which waits for it.
        if self._lock.acquire(blocking=self._users is None or (fresh_within is not None and wait)):
            try:
                if time.monotonic() - self._loaded_at >= max_age or self._users is None:
                    self._users = self._load()
                    self._loaded_at = time.monotonic()
            finally:
                self._lock.release()
        return self._users

    def _known(self, principal: Principal) -> KnownUser | None:
        known = self._current().get(principal.user_id)
        if not _unsettled(known, principal):
            return known
        # Unknown, a token newer than what the replica has, or claims the replica does not hold yet
        # (a team change's events arrive on several partitions, in any order): the events may be on
        # their way. Only a couple of requests per process wait for them (each holds a thread); the
        # others are told to come back, so tokens the replica cannot confirm can never tie up every
        # thread.
        if not self._waiters.acquire(blocking=False):
            raise Problem("your sign-in is still reaching this service; retry in a second", status=503,
                          headers={"Retry-After": "1"})
        try:
            deadline = time.monotonic() + self.catch_up_seconds
            while _unsettled(known, principal) and time.monotonic() < deadline:
                time.sleep(0.1)
                known = self._current(fresh_within=0.1).get(principal.user_id)
        finally:
            self._waiters.release()
        return known

    def check(self, principal: Principal) -> Principal:
        """The caller as the directory knows them, or Unauthorized."""
        known = self._known(principal)
        if known is not None and not known.active:
            # Reactivated a moment ago? Refusing costs the user a sign-in failure, so the replica is
            # read once more first (at most every REREAD_SECONDS per process, however many refused
            # tokens arrive: a deactivated user's client retrying cannot make it read more often;
            # and without waiting for a read another thread is doing).
            known = self._current(fresh_within=REREAD_SECONDS, wait=False).get(principal.user_id)
        if known is None:
            raise Unauthorized("the token names no user of this directory")
        if not known.active:
            raise Unauthorized("this user is not active")
        if known.token_version is not None and principal.token_version != known.token_version:
            raise Unauthorized("token is no longer valid (password, role or team changed); sign in again")
        if known.role != principal.role:
            raise Unauthorized("the token's role is no longer the user's role; sign in again")
        if not _claims_agree(known, principal):
            raise Unauthorized("the token's claims are not the directory's; sign in again")
        return replace(principal, role=known.role, teams=_teams(known), manages=known.manages)


def _unsettled(known: KnownUser | None, principal: Principal) -> bool:
    """Whether the replica may not have caught up with this token yet: it does not know the user, it
    has an older token version, or the same version with other teams (an event still on its way).
    A token older than the replica's version is simply stale: no wait."""
    return (known is None or _behind(known, principal)
            or (known.token_version == principal.token_version and not _claims_agree(known, principal)))


def _teams(known: KnownUser) -> tuple[str, ...]:
    return (known.team_id,) if known.team_id else ()


def _claims_agree(known: KnownUser, principal: Principal) -> bool:
    """The token's team and managed teams are the replica's (a token claiming more is forged, or from
    before a change whose new token version the replica has not seen yet)."""
    return tuple(principal.teams) == _teams(known) and set(principal.manages) == set(known.manages)


def _behind(known: KnownUser, principal: Principal) -> bool:
    return (known.token_version is not None and principal.token_version is not None
            and principal.token_version > known.token_version)


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
    # The user's current token version (the `ver` claim): tokens of another version are refused.
    token_version: Mapped[int | None] = mapped_column(Integer)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DirectoryTeamColumns:
    __tablename__ = "directory_teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    manager_id: Mapped[str | None] = mapped_column(String(64))
    parent_team_id: Mapped[str | None] = mapped_column(String(64))
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CompletedHandoverColumns:
    """Mixin for a service's `completed_handovers` table: the handovers it has applied, remembered so
    that whatever arrives later for the leaver (a conversion, an import, a record created in the gap
    before the deactivation reached every service) goes to the successor too."""

    __tablename__ = "completed_handovers"

    handover_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_user_id: Mapped[str] = mapped_column(String(64), index=True)
    to_user_id: Mapped[str] = mapped_column(String(64))
    completed_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


def owner_lock_key(user_id: str) -> str:
    """The business key (crmkit.db.lock_keys) that a handover of this user and every new record given
    to them take: a record saved while the handover runs either commits first (and is moved) or waits
    and then sees the handover (and goes to the successor). Without it, one committed just after the
    handover's move would stay with the leaver."""
    return f"owner:{user_id}"


def successor_of(session, handovers, users, user_id: str | None, *, lock=None, hops: int = 10) -> str | None:
    """Whoever holds user_id's records now. An active user holds their own: a handover moves what
    someone has, it does not capture what they make later (and a reactivated user is theirs again).
    An inactive user's records go to the successor of their latest completed handover, followed the
    same way through a chain (A -> B -> C). `lock(key)` is called for every user on the way
    (owner_lock_key), so no hop can be handed over again between this read and the commit."""
    seen: list[str] = []
    current = user_id
    while current and hops > 0 and current not in seen:
        if lock is not None:
            lock(owner_lock_key(current))
        seen.append(current)
        with session.no_autoflush:
            user = session.get(users, current)
            successor = None if user is None or user.active else session.execute(
                select(handovers.to_user_id).where(handovers.from_user_id == current)
                .order_by(handovers.completed_at.desc()).limit(1)).scalar_one_or_none()
        if successor is None:
            return current
        current, hops = successor, hops - 1
    return current


def holder_now(uow, handovers, users, user_id: str | None) -> str | None:
    """successor_of, taking the owner's lock of every hop in the unit of work: what a service calls
    before giving a record to someone (successor_now in each service binds its own tables)."""
    if not user_id:
        return user_id
    return successor_of(uow.session, handovers, users, user_id, lock=lambda key: lock_keys(uow, [key]))




def directory_dispatch(on_change, on_handover) -> dict:
    """A service's dispatch table for crm.directory.v1: on_change(uow, envelope) for the user.* and
    team.* events (the replica and what follows from it), on_handover for handover.requested."""
    return {**{(kind, 1): on_change for kind in USER_EVENTS + TEAM_EVENTS}, (HANDOVER_REQUESTED, 1): on_handover}


def apply_directory_event(uow, envelope: dict, user_model, team_model) -> None:
    """Keep the replica current from one crm.directory.v1 event (handover requests are the
    service's own business and are not handled here)."""
    kind, data = envelope["type"], envelope["data"]
    if kind in USER_EVENTS:
        _upsert(uow, user_model, data.get("user") or {},
                ("name", "role", "team_id", "region", "active", "token_version"))
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
    uow.state = None  # what the transaction remembered of teams and people may have changed


def replica_guard(db, user_model, team_model) -> DirectoryGuard:
    """A DirectoryGuard reading the service's own replica tables, again every
    CRM_DIRECTORY_REFRESH_SECONDS (0.5 by default: a revoked token or a deactivated user stops working
    at the service within that long of the replica learning of it). CRM_DIRECTORY_CATCH_UP_SECONDS (3 by default) bounds how
    long a request with a token newer than the replica waits for it."""
    refresh_seconds = float(os.environ.get("CRM_DIRECTORY_REFRESH_SECONDS", "0.5"))

    def load() -> dict[str, KnownUser]:
        with db.uow(readonly=True) as uow:
            users = uow.session.execute(select(user_model.id, user_model.role, user_model.active, user_model.team_id,
                                               user_model.token_version)).all()
            teams = [TeamNode(*row) for row in uow.session.execute(
                select(team_model.id, team_model.manager_id, team_model.parent_team_id))]
        leaders = {t.manager_id for t in teams if t.manager_id}
        return {row.id: KnownUser(role=row.role, active=bool(row.active), team_id=row.team_id,
                                  token_version=row.token_version,
                                  manages=tuple(sorted(managed_teams(row.id, teams))) if row.id in leaders else ())
                for row in users}

    return DirectoryGuard(load, refresh_seconds,
                          catch_up_seconds=float(os.environ.get("CRM_DIRECTORY_CATCH_UP_SECONDS", "3")))


def principal_from_replica(session, user_model, team_model, user_id: str) -> Principal | None:
    """Someone as the replica knows them (role, team, managed teams), for acting on their behalf where
    no token is at hand (a consumer, an import); None if the replica does not know them."""
    user = session.get(user_model, user_id)
    if user is None:
        return None
    manages: tuple[str, ...] = ()
    if user.role in ("manager", "executive", "admin"):
        teams = [TeamNode(*row) for row in session.execute(
            select(team_model.id, team_model.manager_id, team_model.parent_team_id))]
        manages = tuple(sorted(managed_teams(user_id, teams)))
    return Principal(user_id=user_id, role=user.role, teams=(user.team_id,) if user.team_id else (), manages=manages)


def deactivated_user(envelope: dict) -> str | None:
    """The id of the user a crm.directory.v1 event deactivates, if it does."""
    user = (envelope.get("data") or {}).get("user") or {}
    if envelope["type"] in USER_EVENTS and user.get("active") is False and user.get("id"):
        return str(user["id"])
    return None


def remember_handover(session, model, handover_id: str, from_user: str, to_user: str) -> None:
    if session.get(model, handover_id) is None:
        session.add(model(handover_id=handover_id, from_user_id=from_user, to_user_id=to_user, completed_at=utcnow()))


def handover_answer(handover_id: str, service: str, from_user: str, to_user: str, *, moved: int = 0,
                    failure: str | None = None, **counts) -> dict:
    """The data of a service's handover.completed: `status` "completed", or "failed" with the reason
    (the successor was deactivated before this service got to it: nothing moved)."""
    return {"handover_id": handover_id, "service": service, "moved": moved, **counts, "from_user_id": from_user,
            "to_user_id": to_user, "status": "failed" if failure else "completed", "failure": failure}


def handover_request(envelope: dict) -> tuple[str, str, str]:
    """(handover_id, from_user_id, to_user_id) of a handover.requested event, or Reject."""
    data = envelope["data"]
    try:
        return data["handover_id"], str(data["from_user_id"]), str(data["to_user_id"])
    except KeyError as exc:
        raise Reject(f"handover.requested without {exc}") from None
