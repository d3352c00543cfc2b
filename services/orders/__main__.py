"""`python -m services.orders migrate|worker|api [port]|seed-demo` (seed-demo: a demo catalogue, make run)."""
import sys

from crmkit.service import command_line

if __name__ == "__main__":
    if sys.argv[1:2] == ["seed-demo"]:
        from .bootstrap import context
        from .demo import seed

        with context().db.uow() as uow:
            print(f"seeded {seed(uow, context().settings)} demo products")
            uow.commit()
    else:
        command_line("services.orders", sys.argv, default_port=8003)
