"""`python -m services.notifications migrate|worker|api [port]`."""
import sys

from crmkit.service import command_line

if __name__ == "__main__":
    command_line("services.notifications", sys.argv, default_port=8004)
