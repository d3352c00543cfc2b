# syntax=docker/dockerfile:1
# One image definition, a target per deployable:
#   docker build --target leads -t sfa-crm-leads .
#   docker build --target opportunities -t sfa-crm-opportunities .
#   docker build --target gateway -t sfa-crm-gateway .
#   docker build --target edge -t sfa-crm-edge .
# The API runs under gunicorn (CMD); the worker is the same image with `python -m <package> worker`,
# and migrations `python -m <package> migrate` (an init container in Kubernetes).

FROM python:3.11.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    CRM_STATE_DIR=/tmp/crm \
    BIND=0.0.0.0:8000
WORKDIR /app
# Exact versions, as the tests ran them: the runtime part of requirements.lock (deploy/runtime_lock.py).
COPY requirements-runtime.lock ./
RUN pip install --no-cache-dir -r requirements-runtime.lock
COPY pyproject.toml ./
COPY crmkit/ crmkit/
RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --no-create-home --shell /usr/sbin/nologin crm
# The API process and the worker each answer /healthz (the worker on WORKER_METRICS_PORT).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WORKER_METRICS_PORT') or os.environ['BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]

FROM base AS leads
COPY services/__init__.py services/__init__.py
COPY services/leads/ services/leads/
USER 10001:10001
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "python:crmkit.gunicorn_conf", "services.leads.api:create_app()"]

FROM base AS opportunities
COPY services/__init__.py services/__init__.py
COPY services/opportunities/ services/opportunities/
USER 10001:10001
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "python:crmkit.gunicorn_conf", "services.opportunities.api:create_app()"]

FROM base AS orders
COPY services/__init__.py services/__init__.py
COPY services/orders/ services/orders/
USER 10001:10001
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "python:crmkit.gunicorn_conf", "services.orders.api:create_app()"]

FROM base AS notifications
COPY services/__init__.py services/__init__.py
COPY services/notifications/ services/notifications/
USER 10001:10001
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "python:crmkit.gunicorn_conf", "services.notifications.api:create_app()"]

FROM base AS gateway
COPY gateway/ gateway/
USER 10001:10001
EXPOSE 8000 9100
CMD ["gunicorn", "-c", "python:crmkit.gunicorn_conf", "gateway.api:create_app()"]

# The public entry: HAProxy (the 2.6 LTS line, as Debian 12 ships and the tests run) with the
# configuration rendered from gateway/policy.toml; Kubernetes mounts the same file from a ConfigMap.
FROM haproxy:2.6-bookworm AS edge
COPY --chmod=755 infra/haproxy/haproxy.sh /usr/local/bin/haproxy.sh
COPY deploy/edge/haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg
ENV EDGE_STATE_DIR=/tmp/edge
USER 10001:10001
EXPOSE 8080 9190
# A soft stop: what is in flight finishes (hard-stop-after bounds it).
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9190 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
CMD ["haproxy.sh", "run", "/usr/local/etc/haproxy/haproxy.cfg"]
