"""`python -m services.notifications migrate|worker|sender|api [port]`."""
import sys

from crmkit.service import command_line


def _sender() -> None:
    from services.notifications.worker import sender_main
    sender_main()


if __name__ == "__main__":
    command_line("services.notifications", sys.argv, default_port=8004, more={"sender": _sender})
