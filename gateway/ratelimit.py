"""Rate limits per user, per client address and per login name (the `limits` library).

Storage is in memory by default, which is per process: each gunicorn worker counts on its own.
Set CRM_RATE_LIMIT_STORAGE=redis://host:6379 and every worker and gateway replica shares one count.
When that storage is unreachable the gateway lets requests through (and logs it): a limiter outage
must not become a CRM outage.
"""
from __future__ import annotations

import logging
import math
import threading
import time

import limits
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats

from crmkit import metrics
from crmkit.problems import Problem

from .config import GatewayConfig

log = logging.getLogger(__name__)


class TooManyRequests(Problem):
    status = 429


class _LocalFixedWindows:
    """The in-memory (per process) counter. Not limits' MemoryStorage: that one starts a new timer
    thread every 10 ms under load to expire keys, which cost the gateway more than the rest of its
    per-request work. Same semantics as limits' FixedWindowRateLimiter."""

    def __init__(self):
        self._counts: dict[tuple[str, int], int] = {}  # (rule and identifiers, end of window) -> hits
        self._lock = threading.Lock()
        self._swept_at = 0

    @staticmethod
    def _window_end(rule: limits.RateLimitItem, now: float) -> int:
        period = rule.get_expiry()
        return (int(now) // period + 1) * period

    def hit(self, rule: limits.RateLimitItem, *identifiers: str) -> bool:
        now = time.time()
        key = (rule.key_for(*identifiers), self._window_end(rule, now))
        with self._lock:
            if int(now) != self._swept_at:  # at most once a second, forget windows that have ended
                self._counts = {k: v for k, v in self._counts.items() if k[1] > now}
                self._swept_at = int(now)
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        return count <= rule.amount

    def get_window_stats(self, rule: limits.RateLimitItem, *identifiers: str) -> WindowStats:
        return WindowStats(self._window_end(rule, time.time()), 0)


class RateLimits:
    def __init__(self, config: GatewayConfig):
        # Fixed windows: one counter per key and window, half the work of a sliding window on every
        # request; a client can burst up to twice the limit across a window boundary, which is fine
        # for what these limits are for (abuse, runaway scripts).
        if config.rate_limit_storage.startswith("memory://"):
            self.limiter = _LocalFixedWindows()
        else:
            # Short socket timeouts: a Redis that hangs must fail fast (and open), not hold every thread.
            self.limiter = FixedWindowRateLimiter(storage_from_string(
                config.rate_limit_storage, socket_connect_timeout=0.2, socket_timeout=0.2))
        self.rules = {"user": limits.parse(config.rate_limit_per_user),
                      "address": limits.parse(config.rate_limit_per_address),
                      "login": limits.parse(config.rate_limit_login),
                      "login_address": limits.parse(config.rate_limit_login_address)}

    def hit(self, scope: str, key: str) -> None:
        rule = self.rules[scope]
        try:
            if self.limiter.hit(rule, scope, key):
                return
            reset_at = self.limiter.get_window_stats(rule, scope, key).reset_time
        except Exception as exc:  # noqa: BLE001 - fail open, see the module docstring
            log.warning("rate limit storage unavailable, not limiting: %r", exc)
            return
        metrics.RATE_LIMITED.labels(scope).inc()
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(f"too many requests ({rule} per {scope}); retry in {retry_after} s",
                              headers={"Retry-After": str(retry_after)})
