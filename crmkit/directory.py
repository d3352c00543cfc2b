"""What a service knows of the directory on its own, from its replica of crm.directory.v1: who is
deactivated, and each user's current role. The gateway refuses a stale token at once; a service
called directly (bypassing the gateway) refuses it too, within `refresh_seconds` of its replica
learning of the change: a deactivated user, or a token whose role the directory no longer gives.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .auth import Principal, Unauthorized


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
