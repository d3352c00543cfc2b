"""Calling the services: one pooled keep-alive connection pool per upstream (urllib3), timeouts,
retries only where a retry cannot apply a change twice, and a circuit breaker (pybreaker) per
upstream so a dead service costs callers one fast 503 instead of a timeout each.

Failures become problems a client can act on: 503 unreachable or breaker open, 504 too slow,
502 an answer that is not HTTP.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import pybreaker
import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ProtocolError, TimeoutError
from urllib3.util import Retry, Timeout

from crmkit import metrics
from crmkit.errors import Problem

from .config import GatewayConfig

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Answers that mean the service (not the request) is in trouble: they count against the breaker.
UPSTREAM_TROUBLE = frozenset({502, 503, 504})


class UpstreamUnavailable(Problem):
    status = 503


class UpstreamTimeout(Problem):
    status = 504


class BadGateway(Problem):
    status = 502


class _TroubleAnswer(Exception):
    """Raised inside the breaker so a 502/503/504 answer counts as a failure; carries the answer."""

    def __init__(self, response):
        super().__init__(f"upstream answered {response.status}")
        self.response = response


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
        # block=True: at most pool_size connections per process; a burst waits for a free one
        # (bounded by the timeout) instead of opening and throwing away extra sockets.
        self.pool = urllib3.connection_from_url(base_url, maxsize=config.pool_size, block=True, retries=False)
        self.breaker = pybreaker.CircuitBreaker(fail_max=config.breaker_failures,
                                                reset_timeout=config.breaker_reset_seconds, name=name)

    def _retry(self, method: str, idempotent: bool) -> Retry:
        # A refused connection never reached the service, so any request may be tried again. Once
        # sent, only requests that cannot apply twice are (GET/PUT/DELETE, or POST with an Idempotency-Key).
        return Retry(total=2, connect=2, read=2 if idempotent else 0, status=2 if idempotent else 0,
                     other=0, allowed_methods=None if idempotent else frozenset(), backoff_factor=0.05,
                     status_forcelist=UPSTREAM_TROUBLE if idempotent else (), raise_on_status=False,
                     respect_retry_after_header=False)

    def request(self, method: str, path: str, *, headers: dict, body: bytes | None = None,
                timeout: float | None = None, idempotent: bool | None = None) -> UpstreamResponse:
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        read_timeout = timeout or self.config.read_timeout

        def call():
            response = self.pool.urlopen(method, path, body=body, headers=headers, redirect=False,
                                         retries=self._retry(method, idempotent), preload_content=True,
                                         timeout=Timeout(connect=self.config.connect_timeout, read=read_timeout))
            answer = UpstreamResponse(response.status, response.headers, response.data)
            if answer.status in UPSTREAM_TROUBLE:
                raise _TroubleAnswer(answer)
            return answer

        try:
            return self.breaker.call(call)
        except _TroubleAnswer as trouble:
            return trouble.response  # the service's own problem+json, passed on as it is
        except pybreaker.CircuitBreakerError:
            metrics.UPSTREAM_FAILURES.labels(self.name, "circuit_open").inc()
            retry_after = max(1, math.ceil(self.config.breaker_reset_seconds))
            raise UpstreamUnavailable(f"the {self.name} service is failing; try again shortly",
                                      headers={"Retry-After": str(retry_after)}) from None
        except (TimeoutError, MaxRetryError, NewConnectionError, ProtocolError, HTTPError) as exc:
            raise self._problem(exc) from None

    def _problem(self, exc: Exception) -> Problem:
        cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        if isinstance(cause, TimeoutError) and not isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
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

    def __iter__(self):
        return iter(self.by_name.values())
