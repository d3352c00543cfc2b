"""The gateway's own settings, beside the shared ones (crmkit.settings), from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass

# Where each service answers unless `<SERVICE>_URL` says otherwise (CONTRACT §1).
DEFAULT_UPSTREAMS = {"leads": "http://127.0.0.1:8001", "opportunities": "http://127.0.0.1:8002",
                     "orders": "http://127.0.0.1:8003", "notifications": "http://127.0.0.1:8004"}
# The services that own records and move them on a handover (each answers with handover.completed).
RECORD_SERVICES = ("leads", "opportunities", "orders")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class GatewayConfig:
    upstreams: dict[str, str]
    handover_services: tuple[str, ...]
    token_ttl_seconds: int
    jwt_private_key: str | None  # RS256 signing (the services verify with CRM_JWT_PUBLIC_KEY or JWKS)
    jwt_key_id: str | None
    admin_password: str | None
    connect_timeout: float
    read_timeout: float
    pool_size: int
    breaker_failures: int
    breaker_reset_seconds: float
    openapi_cache_seconds: float
    trusted_proxies: int  # how many X-Forwarded-For hops to trust for the client address


def load_config() -> GatewayConfig:
    env = os.environ
    handover = env.get("CRM_HANDOVER_SERVICES")
    return GatewayConfig(
        upstreams={name: env.get(f"{name.upper()}_URL", url).rstrip("/") for name, url in DEFAULT_UPSTREAMS.items()},
        handover_services=tuple(s for s in (handover.split(",") if handover else RECORD_SERVICES) if s),
        token_ttl_seconds=int(env.get("CRM_TOKEN_TTL_SECONDS", "900")),
        jwt_private_key=env.get("CRM_JWT_PRIVATE_KEY") or None,
        jwt_key_id=env.get("CRM_JWT_KEY_ID") or None,
        admin_password=env.get("CRM_ADMIN_PASSWORD") or None,
        connect_timeout=_float("CRM_UPSTREAM_CONNECT_TIMEOUT", 2.0),
        read_timeout=_float("CRM_UPSTREAM_READ_TIMEOUT", 10.0),
        pool_size=int(env.get("CRM_UPSTREAM_POOL_SIZE", "32")),
        breaker_failures=int(env.get("CRM_BREAKER_FAILURES", "5")),
        breaker_reset_seconds=_float("CRM_BREAKER_RESET_SECONDS", 15.0),
        openapi_cache_seconds=_float("CRM_OPENAPI_CACHE_SECONDS", 30.0),
        trusted_proxies=int(env.get("CRM_TRUSTED_PROXIES", "0")),
    )
