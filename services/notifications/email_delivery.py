"""E-mail deliveries: the worker's sender takes the deliveries that are due, sends each over SMTP
(SMTP_HOST/SMTP_PORT; STARTTLS and login when SMTP_STARTTLS / SMTP_USERNAME are set) and records
the outcome.

- A delivery is claimed (`claimed_until`) and committed before it is sent, and marked sent after:
  a sender that dies in between leaves it to be taken again when the claim lapses, so a crash
  costs at most one duplicate, which carries the same Message-ID.
- The server refusing one message for now (4xx) retries it with backoff over about a day (5 s,
  5 min, 30 min, 2 h, 5 h, 10 h); refusing it for good (5xx), or the retries running out, fails it
  and publishes delivery.failed.
- The server being unreachable is an outage, not the message's fault: nothing is counted, and the
  queue is tried again a few seconds later, so every e-mail goes once it is back."""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import smtplib
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from email.errors import MessageError
from email.utils import parseaddr

from sqlalchemy import func, or_, select, update

from crmkit import clock, metrics
from crmkit.db import Database, utcnow
from crmkit.settings import Settings

from . import batch, preferences
from .db import Delivery, Notification
from .events import DELIVERY_FAILED, event
from .messages import email, printable_ascii

log = logging.getLogger(__name__)
BACKOFF = (dt.timedelta(seconds=5), dt.timedelta(minutes=5), dt.timedelta(minutes=30), dt.timedelta(hours=2),
           dt.timedelta(hours=5), dt.timedelta(hours=10))
BATCH = 50
SMTP_TIMEOUT = 10.0
# Longer than a whole batch may take (every send timing out): a claim never lapses while its sender
# is still working through the batch, so only a sender that died leaves mail to send again.
CLAIM = dt.timedelta(seconds=BATCH * SMTP_TIMEOUT + 30)
# A sender stops sending its batch this long after claiming it (the timeout bounds each socket
# operation, not a whole exchange, so a server trickling its replies could outlast the claim).
CLAIM_USABLE = CLAIM - dt.timedelta(seconds=60)
MAX_SENDERS = 6  # each holds a connection for its batch and may take a second: within the pool (5 + 10)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    username: str | None
    password: str | None
    sender: str
    base_url: str  # where links in e-mails point (the console)
    timeout: float = SMTP_TIMEOUT

    @classmethod
    def from_env(cls) -> SmtpSettings:
        """Read once when a sender starts; a sender address that could not be sent from stops it there
        (rather than failing every e-mail one by one)."""
        env = os.environ
        sender = env.get("SMTP_FROM", "SFA CRM <crm@localhost>")
        _name, address = parseaddr(sender)
        if "@" not in address or not printable_ascii(address) or len(sender.splitlines()) != 1:
            raise ValueError(f"SMTP_FROM is not one sender address: {sender!r}")
        return cls(host=env.get("SMTP_HOST", "127.0.0.1"), port=int(env.get("SMTP_PORT", "8025")),
                   starttls=env.get("SMTP_STARTTLS", "0") in ("1", "true", "yes"),
                   username=env.get("SMTP_USERNAME") or None, password=env.get("SMTP_PASSWORD") or None,
                   sender=sender,
                   base_url=env.get("CRM_PUBLIC_URL", "http://127.0.0.1:8080"))


class ServerDown(Exception):
    """The SMTP server cannot be reached: an outage, not a delivery's failure."""


def backoff(attempts: int) -> dt.timedelta | None:
    """How long after the `attempts`-th failed attempt to try again (None: give up)."""
    return BACKOFF[attempts - 1] if attempts <= len(BACKOFF) else None


def claim(db: Database, now: dt.datetime, token: str) -> list[dict]:
    """Take up to BATCH due deliveries for this sender, under `token` (committed before anything is
    sent). Each goes to its recipient's address as it is now; one whose recipient has since been
    deactivated, or has no address any more, is cancelled rather than sent."""
    with db.uow() as uow:
        stmt = (select(Delivery, Notification).join(Notification, Notification.id == Delivery.notification_id)
                .where(Delivery.status == "pending", Delivery.channel == "email", Delivery.next_attempt_at <= now,
                       or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now))
                .order_by(Delivery.next_attempt_at, Delivery.id).limit(BATCH))
        if uow.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(of=Delivery, skip_locked=True)
        taken = []
        rows = uow.session.execute(stmt).all()
        people = batch.start(uow)  # the recipients and their preferences in one query each
        batch.load_people(uow, people, [note.recipient_id for _delivery, note in rows])
        for delivery, note in rows:
            user = people.users[note.recipient_id]
            prefs = preferences.of(uow, note.recipient_id)
            if (user is not None and not user.active) or not prefs.email:
                delivery.status, delivery.last_error = "cancelled", "the recipient is deactivated or has no address"
                continue
            delivery.address, delivery.claimed_by = prefs.email, token
            delivery.claimed_until = now + CLAIM
            taken.append({"id": delivery.id, "address": prefs.email, "title": note.title, "body": note.body,
                          "link": note.link, "language": prefs.language})
        uow.commit()
    return taken


def send_all(db: Database, settings: Settings, smtp: SmtpSettings, now: dt.datetime | None = None,
             stop: threading.Event | None = None) -> int:
    """Send what is due now; returns how many were sent. Raises ServerDown when the server cannot
    be reached (the claims are released; nothing is counted against the deliveries). Stops early,
    giving back what it has not sent, when the worker stops, when its claims are about to lapse (a
    server that trickles its replies), or when another sender has taken them over."""
    token = uuid.uuid4().hex
    started = time.monotonic()
    taken = claim(db, now or utcnow(), token)
    if not taken:
        return 0
    sent = 0
    try:
        connection = _connect(smtp)
    except (OSError, smtplib.SMTPException) as exc:
        _release(db, [t["id"] for t in taken], token)
        raise ServerDown(str(exc)) from exc
    index = 0
    try:
        with _recorder(db) as record:
            for index, item in enumerate(taken):
                if (stop is not None and stop.is_set()) or time.monotonic() - started > CLAIM_USABLE.total_seconds():
                    _release(db, [t["id"] for t in taken[index:]], token)
                    break
                outcome = _send_one(db, settings, smtp, connection, item, token)
                if outcome == "sent":
                    if not record(item["id"], token):
                        # The claim lapsed and another sender holds these now: leave the rest to it.
                        log.warning("e-mail claims lapsed mid-batch; leaving the rest to their new sender")
                        _release(db, [t["id"] for t in taken[index + 1:]], token)
                        break
                    sent += 1
                elif outcome == "down":
                    # The connection broke mid-batch: what was not sent waits for the server to come back.
                    _release(db, [t["id"] for t in taken[index:]], token)
                    raise ServerDown("the connection to the SMTP server broke")
    except ServerDown:
        raise
    except Exception:
        # Anything unforeseen (the database gone mid-batch): what was not recorded is given back at
        # once rather than when the claims lapse (the one in flight may go twice).
        with contextlib.suppress(Exception):
            _release(db, [t["id"] for t in taken[index:]], token)
        raise
    finally:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            pass
    return sent


def _send_one(db: Database, settings: Settings, smtp: SmtpSettings, connection, item: dict, token: str) -> str:
    """One e-mail over the open connection: "sent", "failed" (recorded here; the queue goes on) or
    "down" (the connection broke)."""
    try:
        message = email(sender=smtp.sender, to=item["address"], title=item["title"], body=item["body"],
                        link=item["link"], base_url=smtp.base_url, language=item["language"],
                        delivery_id=str(item["id"]))
        connection.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        _failed(db, settings, item["id"], token, f"{code} {reply!r}", permanent=code >= 500)
        return "failed"
    except smtplib.SMTPResponseException as exc:
        _failed(db, settings, item["id"], token, f"{exc.smtp_code} {exc.smtp_error!r}", permanent=exc.smtp_code >= 500)
        return "failed"
    except (smtplib.SMTPNotSupportedError, ValueError, UnicodeError, MessageError) as exc:
        # This message cannot be sent as it is (an address the server cannot take): it fails alone.
        _failed(db, settings, item["id"], token, f"cannot be sent: {exc}", permanent=True)
        return "failed"
    except (OSError, smtplib.SMTPServerDisconnected):
        return "down"
    return "sent"


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    connection = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout, local_hostname="crm.localdomain")
    if smtp.starttls:
        connection.starttls(context=ssl.create_default_context())
    if smtp.username:
        connection.login(smtp.username, smtp.password or "")
    return connection


def _held(uow, delivery_id, token: str) -> Delivery | None:
    """The delivery if this sender still holds its claim (another may have taken it since the claim
    lapsed: its outcome is theirs to record)."""
    delivery = uow.session.get(Delivery, delivery_id, with_for_update=True)
    return delivery if delivery is not None and delivery.status == "pending" and delivery.claimed_by == token else None


@contextlib.contextmanager
def _recorder(db: Database):
    """record(delivery_id, token) -> still ours: marks one delivery sent at once, in one statement, so that what a
    crash right after sending may repeat is that one e-mail. On PostgreSQL the statement commits by
    itself on a connection held for the batch (one round trip, where a unit of work per e-mail paid
    a pool check-out, its ping, BEGIN and COMMIT); SQLite takes the write lock per statement."""
    def statement(delivery_id, token: str):
        return (update(Delivery).where(Delivery.id == delivery_id, Delivery.status == "pending",
                                       Delivery.claimed_by == token)
                .values(status="sent", sent_at=utcnow(), claimed_until=None, claimed_by=None,
                        attempts=Delivery.attempts + 1))

    def counted(done: int) -> bool:
        if done:
            metrics.DELIVERIES.labels("email", "sent").inc()
        return bool(done)

    if db.engine.dialect.name != "postgresql":
        def record(delivery_id, token: str) -> bool:
            with db.uow() as uow:
                done = uow.session.execute(statement(delivery_id, token).execution_options(
                    synchronize_session=False)).rowcount
                uow.commit()
            return counted(done)
        yield record
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield lambda delivery_id, token: counted(connection.execute(statement(delivery_id, token)).rowcount)


def _release(db: Database, ids: list, token: str) -> None:
    with db.uow() as uow:
        for delivery in uow.session.execute(select(Delivery).where(
                Delivery.id.in_(ids), Delivery.status == "pending", Delivery.claimed_by == token)).scalars():
            delivery.claimed_until, delivery.claimed_by = None, None
        uow.commit()


def _failed(db: Database, settings: Settings, delivery_id, token: str, error: str, *, permanent: bool) -> None:
    with db.uow() as uow:
        delivery = _held(uow, delivery_id, token)
        if delivery is None:
            uow.commit()
            return
        delivery.attempts += 1
        delivery.claimed_by = None
        delivery.last_error, delivery.claimed_until = error[:500], None
        wait = None if permanent else backoff(delivery.attempts)
        if wait is not None:
            metrics.DELIVERIES.labels("email", "retry").inc()
            delivery.next_attempt_at = utcnow() + wait
        else:
            give_up(uow, settings, delivery)
        uow.commit()


def give_up(uow, settings: Settings, delivery: Delivery) -> None:
    """A delivery that will not be tried again, on either channel: failed, counted, and published
    as delivery.failed."""
    delivery.status = "failed"
    metrics.DELIVERIES.labels(delivery.channel, "failed").inc()
    note = uow.session.get(Notification, delivery.notification_id)
    uow.publish(*event(settings, DELIVERY_FAILED, note.recipient_id, {
        "delivery_id": delivery.id, "notification_id": note.id, "recipient_id": note.recipient_id,
        "channel": delivery.channel, "attempts": delivery.attempts, "error": delivery.last_error}, actor=None))


def measure_queue(db: Database, channel: str, now: dt.datetime) -> None:
    """crm_notification_deliveries_due and _oldest_due_seconds of a channel (the dashboard's queue)."""
    with db.uow(readonly=True) as uow:
        count, oldest = uow.session.execute(select(func.count(), func.min(Delivery.next_attempt_at)).where(
            Delivery.status == "pending", Delivery.channel == channel, Delivery.next_attempt_at <= now)).one()
    metrics.DELIVERIES_DUE.labels(channel).set(count)
    metrics.DELIVERY_OLDEST_DUE.labels(channel).set(0.0 if oldest is None else (now - oldest).total_seconds())


def sender_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 1.0,
                measure: bool = True) -> None:
    """One e-mail sender: what is due, every `interval` seconds (5 s while the server is down). The
    worker runs several (senders()), each with its own claims and SMTP connection; `measure`: this
    one keeps the queue's gauges."""
    smtp = SmtpSettings.from_env()
    while not stop.is_set():
        wait = interval
        try:
            # By the schedules' clock when a test moves it forward (quiet hours, retries), never behind.
            while not stop.is_set() and send_all(db, settings, smtp, max(utcnow(), clock.now()), stop) >= BATCH:
                pass
            if measure:
                measure_queue(db, "email", max(utcnow(), clock.now()))
        except ServerDown as exc:
            log.warning("SMTP server unreachable; e-mails wait", extra={"error": str(exc)})
            wait = max(interval, 5.0)
        except Exception:  # a database outage: try again next time
            log.exception("e-mail sender failed; retrying")
        stop.wait(wait)


def senders(db: Database) -> int:
    """How many senders the worker runs (NOTIFICATIONS_EMAIL_SENDERS, default 4, at most 6). Most of a send is
    waiting (on the SMTP server's replies, on the commit that records it), so senders in parallel
    multiply the rate; each crash still repeats at most one e-mail per sender. SQLite has no SKIP
    LOCKED, so two senders there could claim one delivery: it gets one."""
    if db.engine.dialect.name != "postgresql":
        return 1
    return max(1, min(MAX_SENDERS, int(os.environ.get("NOTIFICATIONS_EMAIL_SENDERS", "4"))))
