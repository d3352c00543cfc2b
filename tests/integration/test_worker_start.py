"""A worker whose start hangs restarts itself, and says it is not up until it is.

kafka-python waits for topic metadata without a deadline, so a worker can hang in its start with
the process alive and nothing consumed. These run a real worker process (crmkit.worker.run_worker)
whose topic set-up blocks on its first start, as such a metadata wait would."""
from __future__ import annotations

import signal
import sys
import time

import requests

from infra.stack import ManagedProcess
from tests.e2e.gateway_stack import free_port
from tests.infra import wait_for

WORKER = """
import pathlib, sys, threading
from crmkit import worker
from crmkit.settings import load_settings

starts = pathlib.Path(sys.argv[1])
starts.write_text(starts.read_text() + "start\\n" if starts.exists() else "start\\n")
first = starts.read_text().count("start") == 1
hang = sys.argv[2] == "always" or first

def ensure_topics(bootstrap, topics):
    if hang:
        threading.Event().wait()  # as a metadata request that never completes

worker.ensure_topics = ensure_topics
spec = worker.WorkerSpec(settings=load_settings("leads"), db=None, tables={}, topics={"leads.probe": 1},
                         relay=False)
worker.run_worker(spec)
"""


def _worker(tmp_path, hang: str, *, startup_timeout: str) -> tuple[ManagedProcess, int]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    env = {"PYTHONPATH": str(__import__("infra.stack").stack.REPO), "WORKER_METRICS_PORT": str(port),
           "WORKER_STARTUP_TIMEOUT": startup_timeout, "CRM_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    process = ManagedProcess(name="probe-worker", argv=[sys.executable, str(script), str(tmp_path / "starts"), hang],
                             env=env, log_path=tmp_path / "worker.log",
                             health_url=f"http://127.0.0.1:{port}/healthz",
                             health_of={"service": "leads", "part": "worker"}).start()
    return process, port


def test_a_worker_stuck_in_its_start_is_not_healthy_and_restarts_itself_with_its_stacks_logged(tmp_path):
    process, port = _worker(tmp_path, "first", startup_timeout="2")
    try:
        (starting,) = wait_for(lambda: _answer(port), timeout=10, what="the metrics server")
        assert starting.status_code == 503 and starting.json()["status"] == "starting"
        pid = process.pid
        process.wait_healthy(timeout=30)  # the second start does not hang
        assert (tmp_path / "starts").read_text().count("start") == 2
        assert process.pid == pid and process.alive()  # the same process, executed again
        log = (tmp_path / "worker.log").read_text()
        assert "worker not started after 2s; restarting it" in log
        assert "in ensure_topics" in log  # where it hung, for whoever reads the log
        assert _health(port).json()["status"] == "ok"
    finally:
        process.stop(timeout=10)


def test_a_worker_stuck_in_its_start_leaves_at_once_when_told_to_stop(tmp_path):
    process, port = _worker(tmp_path, "always", startup_timeout="600")
    try:
        wait_for(lambda: _answer(port), timeout=10, what="the metrics server")
        began = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=10) == 0
        assert time.monotonic() - began < 5
    finally:
        process.stop(timeout=10)


def _answer(port: int):
    """The /healthz response, whatever its status (a 503 Response is falsy), or None before it listens."""
    response = _health(port)
    return (response,) if response is not None else None


def _health(port: int):
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except requests.RequestException:
        return None


SLOW_TO_STOP = """
import pathlib, signal, sys, time
def leave(*_):
    time.sleep(float(sys.argv[2]))  # closing its consumers: leaving the groups takes a moment
    pathlib.Path(sys.argv[1]).write_text("left")
    sys.exit(0)
signal.signal(signal.SIGTERM, leave if sys.argv[2] != "never" else signal.SIG_IGN)
pathlib.Path(sys.argv[1] + ".ready").write_text("")
time.sleep(600)
"""


def test_make_stop_returns_only_once_every_process_is_gone(tmp_path):
    """`make stop` stops the broker right after infra.stack down: a worker still leaving its groups
    then would leave ghost members for the next `make run` to wait out. down() waits for each
    process, and kills what has not gone after its timeout."""
    import json
    import subprocess
    import threading

    from infra.stack import down

    script = tmp_path / "slow.py"
    script.write_text(SLOW_TO_STOP)
    procs = {name: subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{name}.left"), delay],
                                    start_new_session=True)
             for name, delay in (("leads-worker", "1.0"), ("orders-worker", "0.3"), ("stubborn", "never"))}
    for p in procs.values():  # reap them as init would, so a gone process is not a zombie of ours
        threading.Thread(target=p.wait, daemon=True).start()
    (tmp_path / "pids.json").write_text(json.dumps({name: p.pid for name, p in procs.items()}))
    wait_for(lambda: all((tmp_path / f"{name}.left.ready").exists() for name in procs), timeout=30,
             what="their SIGTERM handlers in place")

    began = time.monotonic()
    down(tmp_path, timeout=3)
    took = time.monotonic() - began
    assert (tmp_path / "leads-worker.left").read_text() == "left"  # it finished leaving before down returned
    assert (tmp_path / "orders-worker.left").exists() and not (tmp_path / "stubborn.left").exists()
    assert 3 <= took < 10  # the stubborn one was waited for, then killed
    wait_for(lambda: all(p.poll() is not None for p in procs.values()), timeout=5, what="all gone")
    assert procs["stubborn"].returncode == -signal.SIGKILL
    assert not (tmp_path / "pids.json").exists()
