"""Leads worker: the outbox relay and the consumer of the marketing inbound topic."""
from __future__ import annotations

from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import services
from .bootstrap import context
from .events import MARKETING_INBOUND_TOPIC, TOPIC_PARTITIONS


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[ConsumerSpec(
            group_id=f"{settings.topic_prefix}leads-marketing-inbound",
            handlers={settings.topic(MARKETING_INBOUND_TOPIC):
                      lambda uow, event: services.ingest_marketing_lead(uow, settings, event)},
        )],
    )


def main() -> None:
    run_worker(worker_spec())
