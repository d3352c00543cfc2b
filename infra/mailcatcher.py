"""The mail catcher `make run` starts: a real SMTP server (aiosmtpd) on 127.0.0.1:8025 that keeps
every message it is sent as a .eml file in .state/run/mail/ (newest last), where a developer reads
what the CRM e-mailed, instead of anyone's mailbox.

    python -m infra.mailcatcher [--port 8025] [--dir .state/run/mail]
"""
from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller


class _Keep:
    def __init__(self, folder: Path):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**9:09d}.eml"
        (self.folder / name).write_bytes(envelope.content)
        print(f"mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']} -> {self.folder / name}", flush=True)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path(".state/run/mail"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(_Keep(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"catching mail on 127.0.0.1:{args.port} into {args.dir}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
