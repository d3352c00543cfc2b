"""`python -m services.orders migrate|worker|api [port]`."""
import sys

from crmkit.service import command_line

if __name__ == "__main__":
    command_line("services.orders", sys.argv, default_port=8003)
