"""Rate limits per user, per client address and per login name (the `limits` library).

Storage is in memory by default, which is per process: each gunicorn worker counts on its own.
Set CRM_RATE_LIMIT_STORAGE=redis://host:6379 and every worker and gateway replica shares one count.
When that storage is unreachable the gateway lets requests through (and logs it): a limiter outage
must not become a CRM outage.
"""
from __future__ import annotations

import logging
import math
import time

import limits
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from crmkit import metrics
from crmkit.errors import Problem

from .config import GatewayConfig

log = logging.getLogger(__name__)


class TooManyRequests(Problem):
    status = 429


class RateLimits:
    def __init__(self, config: GatewayConfig):
        self.storage = storage_from_string(config.rate_limit_storage)
        # Fixed windows: one counter per key and window, half the work of a sliding window on every
        # request; a client can burst up to twice the limit across a window boundary, which is fine
        # for what these limits are for (abuse, runaway scripts).
        self.limiter = FixedWindowRateLimiter(self.storage)
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
