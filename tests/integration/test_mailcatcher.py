"""The mail catcher `make run` starts (infra/mailcatcher.py): a real SMTP server that keeps what the
CRM sends as .eml files a developer can open."""
from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

from tests.e2e.gateway_stack import free_port
from tests.infra import wait_for


def test_make_runs_mail_catcher_keeps_each_message_as_a_file(tmp_path):
    port, folder = free_port(), tmp_path / "mail"
    catcher = subprocess.Popen([sys.executable, "-m", "infra.mailcatcher", "--port", str(port), "--dir", str(folder)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert "catching mail" in catcher.stdout.readline()
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "crm@localhost", "amy@example.com", "新线索 Acme"
        message.set_content("Follow up by 18:00.")
        deadline = time.monotonic() + 10
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
                    smtp.send_message(message)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        wait_for(lambda: list(folder.glob("*.eml")), what="the message kept")
        [kept] = folder.glob("*.eml")
        parsed = email.message_from_bytes(kept.read_bytes(), policy=email.policy.default)
        assert parsed["Subject"] == "新线索 Acme" and parsed.get_content().strip() == "Follow up by 18:00."
    finally:
        catcher.terminate()
        assert catcher.wait(timeout=10) == 0
