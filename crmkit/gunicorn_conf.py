"""gunicorn settings shared by every API: `gunicorn -c python:crmkit.gunicorn_conf 'pkg.api:create_app()'`."""
import os

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


def child_exit(server, worker):
    # Multiprocess mode: a dead worker's live gauges must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
