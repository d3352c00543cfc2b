"""A real SMTP server (aiosmtpd) standing in for the mail relay: it speaks SMTP on a port of its own
and keeps every message it accepts, parsed, for the test to read back. It can be stopped and
started again on the same port (an outage)."""
from __future__ import annotations

import email
import email.policy
import logging
import threading
import time
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.e2e.gateway_stack import free_port

logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's session chatter


class _Keep:
    def __init__(self, inbox: list[EmailMessage], lock: threading.Lock, refuse: set[str]):
        self.inbox, self.lock, self.refuse = inbox, lock, refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's name
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.inbox.append(message)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.inbox: list[EmailMessage] = []
        self.refuse: set[str] = set()  # addresses answered 550 (refused for good)
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> SmtpServer:
        self._controller = Controller(_Keep(self.inbox, self._lock, self.refuse), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.inbox if to is None or m["To"] == to]

    def wait_for(self, to: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(to)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{count} e-mail(s) to {to} never arrived; got {[m['Subject'] for m in self.messages(to)]}")

    @property
    def env(self) -> dict:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.port)}


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def html_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()
