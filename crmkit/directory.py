"""What a service knows of the directory on its own: which users are deactivated, from its replica
of crm.directory.v1. The gateway refuses a deactivated user's token at once; a service called
directly (bypassing the gateway) refuses it too, within `refresh_seconds` of the replica learning it.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .auth import Principal, Unauthorized


class InactiveUsers:
    def __init__(self, load: Callable[[], set[str]], refresh_seconds: float = 2.0):
        self._load = load  # returns the ids of deactivated users (a small set)
        self.refresh_seconds = refresh_seconds
        self._ids: set[str] = set()
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def _current(self) -> set[str]:
        if time.monotonic() - self._loaded_at >= self.refresh_seconds and self._lock.acquire(blocking=False):
            try:
                self._ids = self._load()
                self._loaded_at = time.monotonic()
            finally:
                self._lock.release()
        return self._ids

    def check(self, principal: Principal) -> None:
        if principal.user_id in self._current():
            raise Unauthorized("this user is not active")
