"""Start and stop the CRM's processes as production runs them: each API under gunicorn (with
Prometheus multiprocess mode), each worker as its own process. Used by `make run` / `make stop`
and by the end-to-end tests, which also SIGKILL workers through it.

    python -m infra.stack up [--db sqlite|postgres]
    python -m infra.stack down
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import requests

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"  # noqa: S105 - make run only


@dataclass(frozen=True)
class ServiceDef:
    name: str
    api_port: int
    worker_metrics_port: int
    package_name: str | None = None

    @property
    def package(self) -> str:
        return self.package_name or f"services.{self.name}"


# The services that exist so far; the others join this list as they land.
SERVICES = [ServiceDef("leads", 8001, 9101), ServiceDef("opportunities", 8002, 9102), ServiceDef("orders", 8003, 9103),
            ServiceDef("notifications", 8004, 9104)]
GATEWAY = ServiceDef("gateway", 8080, 9100, package_name="gateway")
GATEWAY_API_METRICS_PORT = 9180  # the gateway API's /metrics (not on 8080, the public port)
# Under make run the public port is HAProxy's (the edge, deploy/edge/haproxy.cfg); the Python gateway
# is one of its upstreams, on a port of its own. (deploy/ still puts the Python gateway on 8080 until
# the edge's Deployment lands there too.)
EDGE_PORT, EDGE_METRICS_PORT, LOCAL_GATEWAY_PORT = 8080, 9190, 8090
NOWHERE = "127.0.0.1:9"  # the upstream of a service not built yet: nothing answers there (503)
RECORD_SERVICES = ("leads", "opportunities", "orders")  # those that move records on a handover
DEV_ADMIN_PASSWORD = "admin-dev-password"  # noqa: S105 - make run only, printed


def gateway_env(env: dict, services: list[ServiceDef], ports: dict[str, int] | None = None) -> dict:
    """The gateway in front of whichever services run: their URLs, and which of them answer handovers."""
    ports = ports or {}
    env = {**env, **{f"{s.name.upper()}_URL": f"http://127.0.0.1:{ports.get(s.name, s.api_port)}" for s in services}}
    env.setdefault("CRM_HANDOVER_SERVICES", ",".join(s.name for s in services if s.name in RECORD_SERVICES))
    env.setdefault("CRM_ADMIN_PASSWORD", DEV_ADMIN_PASSWORD)
    # The gateway mostly waits on the services: more threads per worker keep it from being the
    # narrowest point (each thread costs little while it waits on a socket).
    env.setdefault("GUNICORN_THREADS", "16")
    return env


@dataclass
class ManagedProcess:
    started: ClassVar[list[ManagedProcess]] = []  # every process this interpreter started, for its logs
    name: str
    argv: list[str]
    env: dict
    log_path: Path
    health_url: str | None = None
    # Who must answer /healthz ({"service": ..., "part": "api" or "worker"}): a port taken by another
    # process (a worker's metrics server answers GET /healthz too) must not pass for this one being up.
    health_of: dict | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)
        ManagedProcess.started.append(self)
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
                if self.health_url is None or self._answers_as_itself(requests.get(self.health_url, timeout=1)):
                    return
            except (requests.RequestException, ValueError, AttributeError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s; see {self.log_path}")

    def _answers_as_itself(self, response: requests.Response) -> bool:
        if not response.ok:
            return False
        if self.health_of is None:
            return True
        body = response.json()
        return isinstance(body, dict) and all(body.get(k) == v for k, v in self.health_of.items())

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no flush, as a crash would."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM the process group and return at once: stopping many processes, ask them all first."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        if not self.alive():
            return
        self.terminate()
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
                workers: int = 2, metrics_port: int | None = None) -> ManagedProcess:
    port = port or service.api_port
    prom_dir = state_dir / "prometheus" / f"{service.name}-{port}"
    shutil.rmtree(prom_dir, ignore_errors=True)  # multiprocess files of a previous run would be summed in
    prom_dir.mkdir(parents=True)
    env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir), "BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": str(workers)}
    if service is GATEWAY:  # the public port serves no /metrics: they have a port of their own
        env.setdefault("CRM_METRICS_PORT", str(metrics_port or GATEWAY_API_METRICS_PORT))
        env.setdefault("CRM_METRICS_ADDR", "127.0.0.1")
    return ManagedProcess(
        name=f"{service.name}-api",
        argv=[str(VENV_BIN / "gunicorn"), "-c", "python:crmkit.gunicorn_conf", f"{service.package}.api:create_app()"],
        env=env, log_path=state_dir / "logs" / f"{service.name}-api.log", health_url=f"http://127.0.0.1:{port}/healthz",
        health_of={"service": service.name, "part": "api"})


def worker_process(service: ServiceDef, env: dict, *, state_dir: Path, metrics_port: int | None = None,
                   part: str = "worker") -> ManagedProcess:
    """`python -m <package> worker`, or another part that runs beside it: the notifications senders
    (part="sender"), as a deployment runs them (the worker then started with
    NOTIFICATIONS_SENDERS_IN_WORKER=0)."""
    port = metrics_port or service.worker_metrics_port
    env = {**env, "WORKER_METRICS_PORT": str(port)}
    return ManagedProcess(
        name=f"{service.name}-{part}", argv=[str(VENV_BIN / "python"), "-m", service.package, part],
        env=env, log_path=state_dir / "logs" / f"{service.name}-{part}.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
        health_of={"service": service.name, "part": part})


# ---- make run / make stop -----------------------------------------------------------------------
RUN_DIR = REPO / ".state" / "run"
MAIL_DIR, MAIL_PORT = RUN_DIR / "mail", 8025  # the local mail catcher's (infra/mailcatcher.py)
PIDS = RUN_DIR / "pids.json"


def up(db: str) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if PIDS.exists():
        down()
    overrides = {}
    if db == "postgres":
        for s in [*SERVICES, GATEWAY]:
            url = subprocess.run([str(REPO / "infra/postgres/postgres.sh"), "url", s.name], capture_output=True,
                                 text=True, check=True).stdout.strip()
            overrides[f"{s.name.upper()}_DATABASE_URL"] = url
    env = service_env(overrides, state_dir=REPO / ".state")
    # Behind the edge, whose X-Forwarded-For names the client (its own limits count per client, not
    # per edge).
    gw_env = {**gateway_env(env, SERVICES), "CRM_TRUSTED_PROXIES": "1"}
    # E-mail from the notifications service goes to a local catcher, never to anyone's mailbox.
    env.setdefault("SMTP_HOST", "127.0.0.1")
    env.setdefault("SMTP_PORT", str(MAIL_PORT))
    procs = [ManagedProcess("mailcatcher", [str(VENV_BIN / "python"), "-m", "infra.mailcatcher", "--port",
                                            env["SMTP_PORT"], "--dir", str(MAIL_DIR)],
                            env, RUN_DIR / "logs" / "mailcatcher.log").start()]
    for s in SERVICES:
        migrate(s, env)
        procs += [api_process(s, env, state_dir=RUN_DIR).start(), worker_process(s, env, state_dir=RUN_DIR).start()]
    migrate(GATEWAY, gw_env)  # also creates the admin user in an empty directory
    subprocess.run([str(VENV_BIN / "python"), "-m", "gateway", "seed-demo"], env=gw_env, cwd=REPO, check=True)
    subprocess.run([str(VENV_BIN / "python"), "-m", "services.orders", "seed-demo"], env=env, cwd=REPO, check=True)
    procs += [api_process(GATEWAY, gw_env, state_dir=RUN_DIR, port=LOCAL_GATEWAY_PORT).start(),
              worker_process(GATEWAY, gw_env, state_dir=RUN_DIR).start()]
    PIDS.write_text(json.dumps({p.name: p.pid for p in procs}))
    for p in procs:
        p.wait_healthy()
    _edge("start", edge_env(env, {s.name: s.api_port for s in SERVICES} | {"gateway": LOCAL_GATEWAY_PORT}))
    print_welcome(gw_env)


def edge_env(env: dict, ports: dict[str, int], *, bind: str = f"127.0.0.1:{EDGE_PORT}",
             metrics_bind: str = f"127.0.0.1:{EDGE_METRICS_PORT}") -> dict:
    """What the edge's configuration reads from the environment (see deploy/edge/haproxy.cfg's header):
    the upstreams on these ports, every other service of the policy nowhere yet."""
    from gateway.policy import RoutePolicy

    upstreams = {f"EDGE_UPSTREAM_{name.upper()}": NOWHERE for name in RoutePolicy.load().services()}
    upstreams |= {f"EDGE_UPSTREAM_{name.upper()}": f"127.0.0.1:{port}" for name, port in ports.items()}
    return {**env, **upstreams, "EDGE_STATE_DIR": str(RUN_DIR / "edge"), "EDGE_BIND": bind,
            "EDGE_METRICS_BIND": metrics_bind,
            "CRM_JWT_ISSUER": env.get("CRM_JWT_ISSUER", "sfa-crm"),
            "CRM_JWT_AUDIENCE": env.get("CRM_JWT_AUDIENCE", "sfa-crm-api"),
            "EDGE_LIMIT_PER_USER": env.get("EDGE_LIMIT_PER_USER", "1200"),
            "EDGE_LIMIT_PER_ADDRESS": env.get("EDGE_LIMIT_PER_ADDRESS", "6000"),
            "EDGE_LIMIT_LOGIN": env.get("EDGE_LIMIT_LOGIN", "60"),
            "EDGE_MAX_BODY_BYTES": env.get("CRM_MAX_BODY_BYTES", str(1024 * 1024)),
            "EDGE_MAX_IMPORT_BYTES": env.get("CRM_MAX_IMPORT_BYTES", str(20 * 1024 * 1024)),
            "EDGE_CORS_ORIGINS": env.get("CRM_CORS_ORIGINS", ""),
            "EDGE_TRUSTED_PROXIES": env.get("EDGE_TRUSTED_PROXIES", "")}


def _edge(command: str, env: dict) -> None:
    from gateway.edge import CONFIG_FILE

    subprocess.run([str(REPO / "infra/haproxy/haproxy.sh"), command,
                    *([str(CONFIG_FILE)] if command == "start" else [])], env=env, cwd=REPO, check=True)


def down(run_dir: Path = RUN_DIR, *, timeout: float = 30) -> None:
    """SIGTERM every process of `make run` and wait until they are gone, SIGKILL what is not after
    `timeout`. `make stop` stops the broker next: a worker still closing then could not leave its
    consumer groups, and the next `make run` would wait out its ghost members (29 s measured)."""
    _edge("stop", {**os.environ, "EDGE_STATE_DIR": str(run_dir / "edge")})
    pids_file = run_dir / PIDS.name
    if not pids_file.exists():
        return
    running = {}
    for name, pid in json.loads(pids_file.read_text()).items():
        try:
            os.killpg(pid, signal.SIGTERM)
            running[name] = pid
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        time.sleep(0.1)
        running = {name: pid for name, pid in running.items() if _group_alive(pid)}
    for name, pid in running.items():
        print(f"{name} (pid {pid}) still running after {timeout:.0f}s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    print(f"stopped {len(json.loads(pids_file.read_text()))} processes")
    pids_file.unlink()


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (a gunicorn master's workers, say)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def print_welcome(env: dict) -> None:
    from gateway.demo import DEMO_PASSWORD, DEMO_USERS

    print("\nThe CRM is running.")
    print(f"  the CRM       http://127.0.0.1:{EDGE_PORT}/api/v1    API docs http://127.0.0.1:{EDGE_PORT}/docs")
    print(f"                (HAProxy, the edge; its metrics on http://127.0.0.1:{EDGE_METRICS_PORT}/metrics)")
    print(f"  gateway       http://127.0.0.1:{LOCAL_GATEWAY_PORT} (tokens, directory, customer view; behind the edge)")
    for s in SERVICES:
        print(f"  {s.name:<13} http://127.0.0.1:{s.api_port} (behind the edge; services verify tokens too)")
    print(f"  e-mail        caught on 127.0.0.1:{MAIL_PORT}; read it in {MAIL_DIR} (one .eml file each)")
    print(f"  logs          {RUN_DIR / 'logs'}")
    print(f"\nSign in as admin / {env['CRM_ADMIN_PASSWORD']}, or as a demo user with the password {DEMO_PASSWORD}:")
    for username, name, role, team, _region in DEMO_USERS:
        print(f"  {username:<5} {role:<10} {team or '':<5} {name}")
    print(f"""
  TOKEN=$(curl -s -X POST http://127.0.0.1:{EDGE_PORT}/api/v1/auth/token -H 'Content-Type: application/json' \\
          -d '{{"username":"ann","password":"{DEMO_PASSWORD}"}}' \\
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{EDGE_PORT}/api/v1/leads
""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    up(args.db) if args.command == "up" else down()


if __name__ == "__main__":
    main()
