"""The checks every request passes before a route runs: a limit per client address, then (with
the caller known) a limit per user, the user still active with current claims, and the route
policy. Services repeat the authentication and the role check themselves."""
from __future__ import annotations

from flask import g, request

from crmkit.auth import Principal

from . import services
from .bootstrap import context, gateway


def client_address() -> str:
    # request.remote_addr is the peer, or the client X-Forwarded-For names when the gateway runs
    # behind trusted proxies (ProxyFix, CRM_TRUSTED_PROXIES).
    return request.remote_addr or "unknown"


def admit() -> None:
    gateway().limits.hit("address", client_address())


def authorize(principal: Principal) -> Principal:
    gw = gateway()
    gw.limits.hit("user", principal.user_id)
    principal = services.check_current(lambda: context().db.uow(readonly=True), gw.user_statuses, principal)
    g.route = gw.policy.decide(request.method, request.path, principal.role)
    return principal
