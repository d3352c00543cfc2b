"""The checks every request to the gateway's own routes passes before a route runs: the caller still
active with current claims, and the route policy. The edge has already verified the token, applied
the route policy and the rate limits; the gateway checks again against its directory (the second
lock, as every service does)."""
from __future__ import annotations

from flask import g, request

from crmkit.auth import Principal

from . import services
from .bootstrap import context, gateway


def client_address() -> str:
    # request.remote_addr is the peer, or the client X-Forwarded-For names when the gateway runs
    # behind trusted proxies (ProxyFix, CRM_TRUSTED_PROXIES: the edge in every deployment).
    return request.remote_addr or "unknown"


def authorize(principal: Principal) -> Principal:
    gw = gateway()
    principal = services.check_current(lambda: context().db.uow(readonly=True), gw.user_statuses, principal)
    g.route = gw.policy.decide(request.method, request.path, principal.role)
    return principal
