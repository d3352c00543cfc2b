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


def child_exit(server, worker):
    # Multiprocess mode: a dead worker's live gauges must stop counting.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
