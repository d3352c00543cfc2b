"""Calling the services: one pooled keep-alive connection pool per upstream (urllib3), timeouts,
a retry only when the connection was refused (the request never reached the service, so nothing can
be applied twice), and a circuit breaker per upstream so a dead service costs callers one fast 503
instead of a connect timeout each.

Failures become problems a client can act on: 503 unreachable or breaker open, 504 too slow,
502 an answer that is not HTTP.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    TimeoutError,
)
from urllib3.util import Retry, Timeout

from crmkit import metrics
from crmkit.problems import Problem

from .config import GatewayConfig

log = logging.getLogger(__name__)

# Answers that mean the service itself is in trouble (not this request): they count against the breaker.
UPSTREAM_TROUBLE = frozenset({502, 503})
# Retry only refused or failed connects: such a request never reached the service.
CONNECT_RETRIES = Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.05,
                        raise_on_status=False)


class UpstreamUnavailable(Problem):
    status = 503


class UpstreamTimeout(Problem):
    status = 504


class BadGateway(Problem):
    status = 502


TRIAL, NORMAL = "trial", "normal"  # how a call was let through the breaker


class CircuitBreaker:
    """Closed until `fail_max` failures in a row; then open (calls refused at once) for `reset_seconds`;
    then one trial call at a time (half-open) whose success closes it again. Only the trial's outcome
    moves a half-open breaker: calls let through before it opened may still be finishing.

    Written here rather than taken from pybreaker: pybreaker 1.4 holds its lock for the whole call,
    which serialized every request to a service through one gateway process."""

    def __init__(self, fail_max: int, reset_seconds: float):
        self.fail_max = fail_max
        self.reset_seconds = reset_seconds
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    def allow(self) -> str | None:
        """TRIAL or NORMAL if the call may go ahead (report its outcome with that), None if refused."""
        with self._lock:
            if self._opened_at is None:
                return NORMAL
            if time.monotonic() - self._opened_at < self.reset_seconds or self._trial_running:
                return None
            self._trial_running = True  # half-open: this caller tries; the others still get 503
            return TRIAL

    def retry_after(self) -> int:
        with self._lock:
            waited = time.monotonic() - (self._opened_at or time.monotonic())
        return max(1, math.ceil(self.reset_seconds - waited))

    def succeeded(self, admission: str) -> None:
        with self._lock:
            if admission == TRIAL or self._opened_at is None:
                self._failures, self._opened_at, self._trial_running = 0, None, False

    def failed(self, admission: str) -> None:
        with self._lock:
            if admission == TRIAL:
                self._opened_at, self._trial_running = time.monotonic(), False
            elif self._opened_at is None:
                self._failures += 1
                if self._failures >= self.fail_max:
                    self._opened_at = time.monotonic()

    def inconclusive(self, admission: str) -> None:
        """The call says nothing about the service's health (our pool was full, the request was slow)."""
        with self._lock:
            if admission == TRIAL:
                self._trial_running = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if time.monotonic() - self._opened_at < self.reset_seconds else "half-open"


@dataclass
class UpstreamResponse:
    status: int
    headers: urllib3.HTTPHeaderDict
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


class Upstream:
    def __init__(self, name: str, base_url: str, config: GatewayConfig):
        self.name = name
        self.base_url = base_url
        self.config = config
        # block=True: at most pool_size connections per process; a burst waits (up to the connect
        # timeout) for a free one instead of opening and throwing away extra sockets.
        self.pool = urllib3.connection_from_url(base_url, maxsize=config.pool_size, block=True, retries=False)
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds)

    def request(self, method: str, path: str, *, headers: dict, body: bytes | None = None,
                timeout: float | None = None) -> UpstreamResponse:
        admission = self.breaker.allow()
        if admission is None:
            metrics.UPSTREAM_FAILURES.labels(self.name, "circuit_open").inc()
            raise UpstreamUnavailable(f"the {self.name} service is failing; try again shortly",
                                      headers={"Retry-After": str(self.breaker.retry_after())})
        try:
            return self._call(admission, method, path, headers, body, timeout)
        except BaseException:
            self.breaker.inconclusive(admission)  # anything unforeseen must not leave a trial pending
            raise

    def _call(self, admission: str, method: str, path: str, headers: dict, body: bytes | None,
              timeout: float | None) -> UpstreamResponse:
        try:
            response = self.pool.urlopen(method, path, body=body, headers=headers, redirect=False,
                                         retries=CONNECT_RETRIES, preload_content=True,
                                         pool_timeout=self.config.connect_timeout,
                                         timeout=Timeout(connect=self.config.connect_timeout,
                                                         read=timeout or self.config.read_timeout))
        except EmptyPoolError:
            # Our own pool is exhausted: the gateway is busy, the service is not at fault.
            self.breaker.inconclusive(admission)
            metrics.UPSTREAM_FAILURES.labels(self.name, "pool_exhausted").inc()
            raise UpstreamUnavailable(f"too many requests in flight to the {self.name} service",
                                      headers={"Retry-After": "1"}) from None
        except (TimeoutError, MaxRetryError, NewConnectionError, ProtocolError, HTTPError) as exc:
            problem = self._problem(exc)
            if problem.status == 504:
                # A slow answer may be this request's doing (a huge search); only a service that
                # cannot be reached trips the breaker for everyone.
                self.breaker.inconclusive(admission)
            else:
                self.breaker.failed(admission)
            raise problem from None
        if response.status in UPSTREAM_TROUBLE:
            self.breaker.failed(admission)
        else:
            self.breaker.succeeded(admission)
        return UpstreamResponse(response.status, response.headers, response.data)

    def _problem(self, exc: Exception) -> Problem:
        cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        if isinstance(cause, TimeoutError) and not isinstance(cause, ConnectTimeoutError):
            metrics.UPSTREAM_FAILURES.labels(self.name, "timeout").inc()
            return UpstreamTimeout(f"the {self.name} service did not answer in time")
        if isinstance(cause, ProtocolError):
            metrics.UPSTREAM_FAILURES.labels(self.name, "protocol").inc()
            return BadGateway(f"the {self.name} service broke the connection")
        metrics.UPSTREAM_FAILURES.labels(self.name, "unreachable").inc()
        log.warning("upstream %s unreachable: %r", self.name, cause)
        return UpstreamUnavailable(f"the {self.name} service is unavailable", headers={"Retry-After": "5"})


class Upstreams:
    def __init__(self, config: GatewayConfig):
        self.by_name = {name: Upstream(name, url, config) for name, url in config.upstreams.items()}

    def __getitem__(self, name: str) -> Upstream:
        return self.by_name[name]
