# The two commands a fresh machine needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
DB ?= sqlite
PYTEST_ARGS ?=

.PHONY: help install run stop test test-unit test-integration test-e2e bench lint

help:
	@echo "make run [DB=postgres] | make stop | make test | make bench | make lint"

install: .venv/.installed

# Reinstalls only when the lock file or the project metadata change.
.venv/.installed: requirements.lock pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements.lock
	.venv/bin/pip install -q --no-deps -e .
	@touch $@

run: install
	infra/haproxy/haproxy.sh install
	infra/kafka/kafka.sh start
	@if [ "$(DB)" = "postgres" ]; then infra/postgres/postgres.sh start; fi
	$(PY) -m infra.stack up --db $(DB)

stop:
	-@[ -x $(PY) ] && $(PY) -m infra.stack down
	infra/kafka/kafka.sh stop
	infra/postgres/postgres.sh stop

# The fixtures start a test-only Kafka broker and PostgreSQL cluster through the same scripts.
# pytest exits 5 when it collected no test, and make fails on it like on any other failure.
test: install
	infra/kafka/kafka.sh fetch
	infra/haproxy/haproxy.sh install
	$(PY) -m pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	infra/haproxy/haproxy.sh install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: install
	infra/haproxy/haproxy.sh install
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

bench: install
	infra/kafka/kafka.sh fetch
	$(PY) -m bench.run $(BENCH_ARGS)

lint: install
	$(PY) -m ruff check .
