"""Orders worker: the outbox relay, and the consumers of the directory (replica and handovers) and of
accounts (the replica orders are placed on)."""
from __future__ import annotations

from crmkit.consumer import Dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import accounts, handover
from .bootstrap import context
from .events import DIRECTORY_TOPIC, OPPORTUNITIES_TOPIC, TOPIC_PARTITIONS


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[
            ConsumerSpec(group_id=f"{settings.topic_prefix}orders-directory", handlers={
                settings.topic(DIRECTORY_TOPIC): Dispatch(handover.directory_handlers(settings))}),
            ConsumerSpec(group_id=f"{settings.topic_prefix}orders-accounts", handlers={
                settings.topic(OPPORTUNITIES_TOPIC): Dispatch(accounts.ACCOUNT_HANDLERS)}),
        ],
        loops=[],
    )


def main() -> None:
    run_worker(worker_spec())
