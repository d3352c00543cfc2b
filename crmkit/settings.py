"""Settings from the environment (CONTRACT §1). One frozen object per process."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _state_dir() -> Path:
    return Path(os.environ.get("CRM_STATE_DIR", REPO_ROOT / ".state"))


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    service: str
    database_url: str
    kafka_bootstrap_servers: str
    jwt_secret: str | None
    jwt_public_key: str | None
    jwt_jwks_url: str | None
    jwt_issuer: str
    jwt_audience: str
    default_currency: str
    max_body_bytes: int
    max_import_bytes: int
    topic_prefix: str = ""
    ensure_topics: bool = True
    extra: dict = field(default_factory=dict)

    def topic(self, name: str) -> str:
        """Tests give every run its own topics through CRM_TOPIC_PREFIX."""
        return f"{self.topic_prefix}{name}"


def load_settings(service: str) -> Settings:
    env = os.environ
    default_db = f"sqlite:///{_state_dir() / (service + '.sqlite')}"
    return Settings(
        service=service,
        database_url=env.get(f"{service.upper()}_DATABASE_URL", default_db),
        kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        jwt_secret=env.get("CRM_JWT_SECRET") or None,
        jwt_public_key=env.get("CRM_JWT_PUBLIC_KEY") or None,
        jwt_jwks_url=env.get("CRM_JWT_JWKS_URL") or None,
        jwt_issuer=env.get("CRM_JWT_ISSUER", "sfa-crm"),
        jwt_audience=env.get("CRM_JWT_AUDIENCE", "sfa-crm-api"),
        default_currency=env.get("CRM_DEFAULT_CURRENCY", "CNY"),
        max_body_bytes=_int("CRM_MAX_BODY_BYTES", 1024 * 1024),
        max_import_bytes=_int("CRM_MAX_IMPORT_BYTES", 20 * 1024 * 1024),
        topic_prefix=env.get("CRM_TOPIC_PREFIX", ""),
        ensure_topics=env.get("CRM_ENSURE_TOPICS", "1") not in ("0", "false", "no"),
    )
