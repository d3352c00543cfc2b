"""`python -m gateway migrate|worker|api|seed-demo`.

migrate also creates the admin user when the directory is empty (CRM_ADMIN_PASSWORD);
seed-demo adds the demo organisation (make run does both).
"""
import sys


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else ""
    if command == "migrate":
        from . import services
        from .bootstrap import context, gateway, migrate
        migrate()
        with context().db.uow() as uow:
            if services.bootstrap_admin(uow, context().settings, gateway().config.admin_password):
                print("created the admin user")
            uow.commit()
    elif command == "seed-demo":
        from .bootstrap import context
        from .demo import seed
        with context().db.uow() as uow:
            seed(uow, context().settings)
            uow.commit()
    elif command == "worker":
        from .worker import main as worker_main
        worker_main()
    elif command == "api":
        from .api import create_app
        create_app().run(port=int(argv[2]) if len(argv) > 2 else 8080)
    else:
        sys.exit("usage: python -m gateway migrate|seed-demo|worker|api [port]")


if __name__ == "__main__":
    main(sys.argv)
