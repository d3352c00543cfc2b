"""`python -m services.leads migrate|worker|api` (api: a development server; production uses gunicorn)."""
import sys


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else ""
    if command == "migrate":
        from .bootstrap import migrate
        migrate()
    elif command == "worker":
        from .worker import main as worker_main
        worker_main()
    elif command == "api":
        from .api import create_app
        create_app().run(port=int(argv[2]) if len(argv) > 2 else 8001)
    else:
        sys.exit("usage: python -m services.leads migrate|worker|api [port]")


if __name__ == "__main__":
    main(sys.argv)
