"""Webhook endpoints (admin) and what they are sent: each notification of a type an endpoint
subscribes to, as a Standard Webhooks message (https://www.standardwebhooks.com): the headers
`webhook-id` (the same at every attempt, so a receiver drops a repeat), `webhook-timestamp` (Unix
seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
one signature per live secret, space-separated, so a receiver verifies with the existing libraries
through a rotation. Secrets are `whsec_` and base64 of 24 random bytes, shown once."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import uuid

from sqlalchemy import func, select

from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound, ValidationFailed

from . import ssrf
from .batch import current
from .db import Delivery, Notification, WebhookEndpoint

MAX_SECRETS = 3  # live at once: the new one and two still in their overlap
SECRET_PREFIX = "whsec_"  # noqa: S105 - the scheme's prefix, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def live_secrets(endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    return [s["secret"] for s in endpoint.secrets
            if s.get("expires_at") is None or dt.datetime.fromisoformat(s["expires_at"]) > now]


def headers(endpoint: WebhookEndpoint, message_id: str, body: str, now: dt.datetime) -> dict[str, str]:
    timestamp = int(now.timestamp())
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "content-type": "application/json",
            "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in live_secrets(endpoint, now)),
            "user-agent": "sfa-crm-webhooks/1"}


def message_id(delivery_id: uuid.UUID) -> str:
    return f"msg_{delivery_id.hex}"


# ---- endpoints (admin) ---------------------------------------------------------------------------------
def _checked_url(url: str) -> str:
    try:
        target = ssrf.parse(url)
        if not target.allow_listed and ssrf._literal(target.host) is None:
            try:  # a name that resolves to a private address now is refused now (and at each send)
                ssrf.resolve(target)
            except ssrf.Refused as exc:
                if "does not resolve" not in str(exc):
                    raise
    except ssrf.Refused as exc:
        raise ValidationFailed(f"url: {exc}", errors={"url": [str(exc)]}) from None
    return url


def create(uow: UnitOfWork, principal, fields: dict) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (shown this once)."""
    secret = new_secret()
    endpoint = WebhookEndpoint(id=uuid.uuid4(), url=_checked_url(fields["url"]), description=fields.get("description"),
                               events=sorted(set(fields["events"])), secrets=[{"secret": secret, "expires_at": None}],
                               status="active", created_by=principal.user_id)
    uow.session.add(endpoint)
    uow.session.flush()
    return endpoint, secret


def get(uow: UnitOfWork, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = uow.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.status == "deleted":
        raise NotFound("no such webhook endpoint")
    return endpoint


def listing(uow: UnitOfWork) -> list[WebhookEndpoint]:
    return list(uow.session.execute(select(WebhookEndpoint).where(WebhookEndpoint.status != "deleted")
                                    .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)).scalars())


def counts(uow: UnitOfWork, endpoint_id: uuid.UUID) -> dict[str, int]:
    rows = uow.session.execute(select(Delivery.status, func.count()).where(Delivery.endpoint_id == endpoint_id)
                               .group_by(Delivery.status)).all()
    return {"pending": 0, "sent": 0, "failed": 0, "cancelled": 0, **dict(rows)}


def delete(uow: UnitOfWork, endpoint_id: uuid.UUID) -> None:
    """No more deliveries to it; those waiting are cancelled. (Kept, with its history, as deleted.)"""
    endpoint = get(uow, endpoint_id)
    endpoint.status, endpoint.updated_at = "deleted", utcnow()
    cancel_waiting(uow, endpoint.id, "the endpoint was deleted")


def rotate(uow: UnitOfWork, endpoint_id: uuid.UUID) -> tuple[WebhookEndpoint, str, dt.datetime]:
    """A new secret, used from now on; the ones before it keep signing until the overlap ends, so the
    receiver has time to switch (each message carries a signature by each)."""
    endpoint = get(uow, endpoint_id)
    now = utcnow()
    until = now + dt.timedelta(hours=float(os.environ.get("NOTIFICATIONS_WEBHOOK_ROTATION_HOURS", "24")))
    kept = [{"secret": s["secret"], "expires_at": s.get("expires_at") or until.isoformat()}
            for s in endpoint.secrets if s.get("expires_at") is None or dt.datetime.fromisoformat(s["expires_at"]) > now]
    secret = new_secret()
    endpoint.secrets = [{"secret": secret, "expires_at": None}, *kept][:MAX_SECRETS]
    endpoint.updated_at = now
    return endpoint, secret, until


def cancel_waiting(uow: UnitOfWork, endpoint_id: uuid.UUID, reason: str) -> None:
    for delivery in uow.session.execute(select(Delivery).where(
            Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")).scalars():
        delivery.status, delivery.last_error = "cancelled", reason


# ---- fan-out: called for each notification as it is raised ----------------------------------------------
def fan_out(uow: UnitOfWork, note: Notification, now: dt.datetime) -> None:
    batch = current(uow)
    if batch is not None and batch.endpoints is not None:
        endpoints = batch.endpoints
    else:
        endpoints = uow.session.execute(select(WebhookEndpoint).where(WebhookEndpoint.status == "active")).scalars().all()
        if batch is not None:
            batch.endpoints = endpoints
    # What the admins are told of the webhooks themselves stays in the CRM.
    wanted = [e for e in endpoints if ("*" in e.events or note.type in e.events) and note.type != "delivery_failed"]
    if not wanted:
        return
    body = json.dumps({"type": note.type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": {
        "id": str(note.id), "recipient_id": note.recipient_id, "type": note.type, "title": note.title,
        "body": note.body, "link": note.link, "record_type": note.record_type, "record_id": note.record_id,
        "account_id": str(note.account_id) if note.account_id else None,
        "created_at": note.created_at.isoformat().replace("+00:00", "Z")}}, ensure_ascii=False, separators=(",", ":"))
    for endpoint in wanted:
        uow.session.add(Delivery(notification=note, channel="webhook", address=endpoint.url,
                                 endpoint_id=endpoint.id, payload=body, status="pending", attempts=0,
                                 next_attempt_at=now, created_at=now))
