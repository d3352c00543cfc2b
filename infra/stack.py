"""Start and stop the CRM's processes as production runs them: each API under gunicorn (with
Prometheus multiprocess mode), each worker as its own process. Used by `make run` / `make stop`
and by the end-to-end tests, which also SIGKILL workers through it.

    python -m infra.stack up [--db sqlite|postgres]
    python -m infra.stack down
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"  # noqa: S105 - make run only


@dataclass(frozen=True)
class ServiceDef:
    name: str
    api_port: int
    worker_metrics_port: int

    @property
    def package(self) -> str:
        return f"services.{self.name}"


# The services that exist so far; the gateway and the other services join this list as they land.
SERVICES = [ServiceDef("leads", 8001, 9101)]


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    env: dict
    log_path: Path
    health_url: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.health_url is None or requests.get(self.health_url, timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no flush, as a crash would."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def service_env(base: dict, *, state_dir: Path) -> dict:
    env = {**os.environ, **base}
    env.setdefault("CRM_STATE_DIR", str(state_dir))
    env.setdefault("CRM_JWT_SECRET", DEV_JWT_SECRET)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def migrate(service: ServiceDef, env: dict) -> None:
    subprocess.run([str(VENV_BIN / "python"), "-m", service.package, "migrate"], env=env, cwd=REPO, check=True)


def api_process(service: ServiceDef, env: dict, *, state_dir: Path, port: int | None = None,
                workers: int = 2) -> ManagedProcess:
    port = port or service.api_port
    prom_dir = state_dir / "prometheus" / f"{service.name}-{port}"
    shutil.rmtree(prom_dir, ignore_errors=True)  # multiprocess files of a previous run would be summed in
    prom_dir.mkdir(parents=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir), "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": str(workers)}
    return ManagedProcess(
        name=f"{service.name}-api",
        argv=[str(VENV_BIN / "gunicorn"), "-c", "python:crmkit.gunicorn_conf", f"{service.package}.api:create_app()"],
        env=env, log_path=state_dir / "logs" / f"{service.name}-api.log", health_url=f"http://127.0.0.1:{port}/healthz")


def worker_process(service: ServiceDef, env: dict, *, state_dir: Path, metrics_port: int | None = None) -> ManagedProcess:
    port = metrics_port or service.worker_metrics_port
    env = {**env, "WORKER_METRICS_PORT": str(port)}
    return ManagedProcess(
        name=f"{service.name}-worker", argv=[str(VENV_BIN / "python"), "-m", service.package, "worker"],
        env=env, log_path=state_dir / "logs" / f"{service.name}-worker.log",
        health_url=f"http://127.0.0.1:{port}/healthz")


# ---- make run / make stop -----------------------------------------------------------------------
RUN_DIR = REPO / ".state" / "run"
PIDS = RUN_DIR / "pids.json"


def up(db: str) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if PIDS.exists():
        down()
    overrides = {}
    if db == "postgres":
        for s in SERVICES:
            url = subprocess.run([str(REPO / "infra/postgres/postgres.sh"), "url", s.name], capture_output=True,
                                 text=True, check=True).stdout.strip()
            overrides[f"{s.name.upper()}_DATABASE_URL"] = url
    env = service_env(overrides, state_dir=REPO / ".state")
    procs = []
    for s in SERVICES:
        migrate(s, env)
        procs += [api_process(s, env, state_dir=RUN_DIR).start(), worker_process(s, env, state_dir=RUN_DIR).start()]
    PIDS.write_text(json.dumps({p.name: p.pid for p in procs}))
    for p in procs:
        p.wait_healthy()
    seed_directory(env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    print_welcome(env)


def down() -> None:
    if not PIDS.exists():
        return
    for name, pid in json.loads(PIDS.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
            print(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            pass
    PIDS.unlink()


# The demo organisation (CONTRACT §2): an executive, two teams each with a manager and reps,
# marketing and service users. Until the gateway (which owns the directory) lands, make run
# publishes it on crm.directory.v1 itself, so the services' replicas know who is who.
DEMO_TEAMS = [("team-east", "East", "mgr-east"), ("team-west", "West", "mgr-west")]
DEMO_USERS = [("rep-ann", "rep", ["team-east"], []), ("rep-amy", "rep", ["team-east"], []),
              ("rep-bo", "rep", ["team-west"], []), ("rep-ben", "rep", ["team-west"], []),
              ("mgr-east", "manager", ["team-east"], ["team-east"]), ("mgr-west", "manager", ["team-west"], ["team-west"]),
              ("exec", "executive", [], []), ("mkt", "marketing", [], []), ("svc", "service", [], [])]


def seed_directory(bootstrap: str) -> None:
    from crmkit.events import encode, headers_for, new_event
    from crmkit.kafka import make_producer

    producer = make_producer(bootstrap, client_id="make-run-seed")
    events = [new_event("team.created", tid, {"team": {"id": tid, "name": name, "manager_id": manager,
                                                       "parent_team_id": None}}, source="make-run")
              for tid, name, manager in DEMO_TEAMS]
    events += [new_event("user.created", uid, {"user": {"id": uid, "name": uid, "role": role,
                                                        "team_id": teams[0] if teams else None,
                                                        "region": "east" if "east" in "".join(teams) else "west",
                                                        "active": True}}, source="make-run")
               for uid, role, teams, _ in DEMO_USERS]
    for event in events:
        producer.send("crm.directory.v1", key=event["subject"].encode(), value=encode(event),
                      headers=headers_for(event))
    producer.flush()
    producer.close()


def print_welcome(env: dict) -> None:
    from crmkit.auth import issue_token

    print("\nThe CRM is running.")
    for s in SERVICES:
        print(f"  {s.name:<8} API  http://127.0.0.1:{s.api_port}/api/v1   docs http://127.0.0.1:{s.api_port}/docs")
    print(f"  logs     {RUN_DIR / 'logs'}")
    print("\nUntil the gateway lands, these development tokens (valid 12 h) act as the demo users:")
    for user, role, teams, manages in DEMO_USERS:
        token = issue_token(secret=env["CRM_JWT_SECRET"], user_id=user, name=user, role=role, teams=teams,
                            manages=manages, ttl_seconds=12 * 3600)
        print(f"  {user:<9} ({role}): {token}")
    print("\n  e.g. curl -H 'Authorization: Bearer <token>' http://127.0.0.1:8001/api/v1/leads\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    up(args.db) if args.command == "up" else down()


if __name__ == "__main__":
    main()
