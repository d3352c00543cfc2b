"""Webhook deliveries: the worker's sender takes those due, posts each to its endpoint (the address
checked by ssrf.py, redirects not followed) and records the outcome.

- 2xx: sent. The message id is the delivery's, the same at every attempt, so a receiver drops the
  one repeat that a crash between sending and recording may cost (as for e-mail: claimed first,
  marked after).
- 410 Gone: the receiver wants no more; the endpoint is disabled at once.
- Anything else (an error status, a redirect, a timeout, a refused address): retried with backoff
  over about a day (5 s, 5 min, 30 min, 2 h, 5 h, 10 h), later if the receiver's Retry-After asks for
  it; when the retries run out the endpoint is disabled.
- A disabled endpoint's waiting deliveries are cancelled, delivery.failed is published, and the
  admins are told."""
from __future__ import annotations

import datetime as dt
import http.client
import logging
import socket
import ssl
import threading
import uuid

from sqlalchemy import or_, select

from crmkit import clock, metrics
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings

from . import ssrf, webhooks
from .db import Delivery, DirectoryUser, Notification, WebhookEndpoint
from .email_delivery import backoff, give_up, measure_queue
from .inbox import About, notify
from .messages import render

log = logging.getLogger(__name__)
BATCH = 20
READ_TIMEOUT = 5.0  # to connect, and for each read
DEADLINE = 15.0  # for the whole exchange
MAX_ANSWER = 64 * 1024  # of the answer's body, read and dropped
CLAIM = dt.timedelta(seconds=BATCH * DEADLINE + 30)  # longer than a whole batch may take
MAX_RETRY_AFTER = dt.timedelta(hours=24)


def claim(db: Database, now: dt.datetime, token: str) -> list[uuid.UUID]:
    with db.uow() as uow:
        stmt = (select(Delivery).join(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id)
                .where(Delivery.status == "pending", Delivery.channel == "webhook", Delivery.next_attempt_at <= now,
                       WebhookEndpoint.status == "active",
                       or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now))
                .order_by(Delivery.next_attempt_at, Delivery.id).limit(BATCH))
        if uow.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Delivery, skip_locked=True)
        taken = []
        for delivery in uow.session.execute(stmt).scalars().all():
            delivery.claimed_by, delivery.claimed_until = token, now + CLAIM
            taken.append(delivery.id)
        uow.commit()
    return taken


def send_all(db: Database, settings: Settings, now: dt.datetime | None = None) -> int:
    """Post what is due now (a batch); returns how many were delivered."""
    return send_batch(db, settings, now)[1]


def send_batch(db: Database, settings: Settings, now: dt.datetime | None = None) -> tuple[int, int]:
    """(how many were taken, how many delivered) of one batch of what is due."""
    token = uuid.uuid4().hex
    delivered = 0
    taken = claim(db, now or utcnow(), token)
    for delivery_id in taken:
        with db.uow() as uow:
            delivery = uow.session.get(Delivery, delivery_id)
            endpoint = uow.session.get(WebhookEndpoint, delivery.endpoint_id)
            if delivery.status != "pending" or endpoint.status != "active":
                continue  # cancelled since it was claimed (the endpoint answered 410 to one before it)
            note = uow.session.get(Notification, delivery.notification_id)
            recipient = uow.session.get(DirectoryUser, note.recipient_id)
            if recipient is not None and not recipient.active:
                delivery.status, delivery.last_error = "cancelled", "the recipient was deactivated"
                uow.commit()
                continue
            body = delivery.payload
            sent_headers = webhooks.headers(endpoint, webhooks.message_id(delivery.id), body, utcnow())
        try:
            outcome = post(endpoint.url, body, sent_headers)
        except Exception as exc:  # whatever goes wrong with one delivery is that delivery's failure
            log.exception("webhook delivery %s failed unexpectedly", delivery_id)
            outcome = Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        delivered += record(db, settings, delivery_id, token, outcome, max(now or utcnow(), utcnow()))
    return len(taken), delivered


class Outcome:
    def __init__(self, status: int | None, error: str | None = None, retry_after: dt.timedelta | None = None):
        self.status, self.error, self.retry_after = status, error, retry_after

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Pinned(http.client.HTTPSConnection):
    """An HTTPS connection to the address the guard checked, verifying the certificate for the name."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedPlain(http.client.HTTPConnection):
    """Plain HTTP to the checked address: allow-listed targets only (ssrf.parse refuses it otherwise)."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def post(url: str, body: str, sent_headers: dict) -> Outcome:
    """One attempt: to the address the guard checked, never following a redirect, reading at most
    MAX_ANSWER bytes of the answer (undecoded), all within DEADLINE however slowly the receiver
    trickles: a receiver cannot hold the sender, nor fill its memory."""
    try:
        target = ssrf.parse(url)
        address = ssrf.resolve(target)
    except ssrf.Refused as exc:
        return Outcome(None, f"refused: {exc}")
    kind = _Pinned if target.scheme == "https" else _PinnedPlain
    connection = kind(address, target.host, target.port, timeout=READ_TIMEOUT)
    watchdog = threading.Timer(DEADLINE, _cut, args=(connection,))
    watchdog.start()
    try:
        connection.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
        name = f"[{target.host}]" if ":" in target.host else target.host
        connection.putheader("Host", name if target.port in (80, 443) else f"{name}:{target.port}")
        payload = body.encode()
        for header, value in {**sent_headers, "content-length": str(len(payload))}.items():
            connection.putheader(header, value)
        connection.endheaders(payload)
        response = connection.getresponse()
        response.read(MAX_ANSWER)
        status, retry_after = response.status, _retry_after(response.getheader("retry-after"))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
    finally:
        watchdog.cancel()
        connection.close()
    if 300 <= status < 400:
        return Outcome(status, f"{status}: redirects are not followed", retry_after)
    return Outcome(status, None if 200 <= status < 300 else f"{status}", retry_after)


def _cut(connection: http.client.HTTPConnection) -> None:
    """The deadline passed: end the exchange (the blocked read then fails)."""
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _retry_after(value: str | None) -> dt.timedelta | None:
    """Retry-After in seconds, capped at a day (an HTTP date or nonsense is ignored)."""
    value = (value or "").strip()
    if not value.isdigit() or len(value) > 9:
        return MAX_RETRY_AFTER if value.isdigit() else None
    return min(dt.timedelta(seconds=int(value)), MAX_RETRY_AFTER)


def record(db: Database, settings: Settings, delivery_id, token: str, outcome: Outcome, now: dt.datetime) -> int:
    with db.uow() as uow:
        delivery = uow.session.get(Delivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.status != "pending" or delivery.claimed_by != token:
            uow.commit()  # another sender took it after our claim lapsed: its outcome is theirs
            return 0
        delivery.attempts += 1
        delivery.claimed_by, delivery.claimed_until = None, None
        metrics.DELIVERIES.labels("webhook", "sent" if outcome.ok else "retry").inc()
        if outcome.ok:
            delivery.status, delivery.sent_at = "sent", utcnow()
            uow.commit()
            return 1
        delivery.last_error = (outcome.error or str(outcome.status))[:500]
        endpoint = uow.session.get(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
        wait = backoff(delivery.attempts)
        if outcome.status == 410:
            _give_up(uow, settings, delivery, endpoint, "the receiver answered 410 Gone")
        elif wait is None:
            _give_up(uow, settings, delivery, endpoint, f"no success after {delivery.attempts} attempts: "
                                                        f"{delivery.last_error}")
        else:
            delivery.next_attempt_at = now + max(wait, outcome.retry_after or dt.timedelta(0))
        uow.commit()
    return 0


def _give_up(uow: UnitOfWork, settings: Settings, delivery: Delivery, endpoint: WebhookEndpoint, reason: str) -> None:
    give_up(uow, settings, delivery)
    if endpoint.status != "active":
        return
    endpoint.status, endpoint.disabled_reason, endpoint.updated_at = "disabled", reason[:500], utcnow()
    webhooks.cancel_waiting(uow, endpoint.id, f"the endpoint was disabled: {reason}"[:500])
    admins = uow.session.execute(select(DirectoryUser.id).where(
        DirectoryUser.role == "admin", DirectoryUser.active.is_(True)).order_by(DirectoryUser.id)).scalars().all()
    # The endpoint by its host and id only: a webhook URL often is the receiver's credential.
    where = f"{ssrf.host_of(endpoint.url)} ({endpoint.id})"
    notify(uow, settings, admins, "delivery_failed",
           lambda _r, language: render("delivery_failed", language, {
               "address": where, "attempts": delivery.attempts, "error": reason.replace(endpoint.url, where)}),
           About("webhook", str(endpoint.id), None, f"/webhooks/{endpoint.id}"),
           source_key=f"webhook-disabled:{endpoint.id}:{endpoint.version}")


def sender_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 1.0) -> None:
    """The worker's webhook sender: what is due, every `interval` seconds (by crmkit.clock when a
    test moves it forward, never behind the wall clock)."""
    while not stop.is_set():
        try:
            while send_batch(db, settings, max(utcnow(), clock.now()))[0] >= BATCH:
                pass
            measure_queue(db, "webhook", max(utcnow(), clock.now()))
        except Exception:  # a database outage: try again next time
            log.exception("webhook sender failed; retrying")
        stop.wait(interval)
