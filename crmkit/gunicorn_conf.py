"""gunicorn settings shared by every API: `gunicorn -c python:crmkit.gunicorn_conf 'pkg.api:create_app()'`."""
import json
import os

from gunicorn import util
from prometheus_client import multiprocess

bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 30
accesslog = None  # every request is logged by the app as JSON with its request id
max_requests = 20000
max_requests_jitter = 2000
# Containers run with a read-only root filesystem and no home directory: no control socket
# (gunicorn would try $HOME/.gunicorn), and heartbeat files in memory.
control_socket_disable = True
_SHM = "/dev/shm"  # noqa: S108 - gunicorn's documented choice for worker heartbeat files
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None


def on_starting(server):
    # Samples of processes from before a restart (the directory outlives them in a pod's volume)
    # would be summed into /metrics forever.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def when_ready(server):
    # CRM_METRICS_PORT: /metrics on a port of its own, served by the master from the workers'
    # multiprocess files, and not on the API's port (the gateway's API port is the public one).
    port = os.environ.get("CRM_METRICS_PORT")
    if port and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        try:
            start_http_server(int(port), addr=os.environ.get("CRM_METRICS_ADDR", "0.0.0.0"), registry=registry)
        except OSError as exc:  # a port clash costs the metrics, never the API
            server.log.warning("metrics port %s unavailable: %s", port, exc)


def child_exit(server, worker):
    # Multiprocess mode: a dead worker's live gauges must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def _problem_error(sock, status_int, reason, mesg):
    """gunicorn answers what it refuses before the app runs (a request line over the limit: 414,
    malformed headers: 400, 431) with an HTML page of its own; every error of this API is
    problem+json (CONTRACT §3), these too. gunicorn looks `util.write_error` up at each call, and
    workers are forked from the master that read this file, so replacing it here covers them."""
    body = json.dumps({"type": f"https://sfa-crm.dev/problems/{status_int}", "title": reason, "status": status_int,
                       "detail": mesg or reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = _problem_error
