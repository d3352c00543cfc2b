"""Orders worker: the outbox relay; the consumers of the directory (replica and handovers) and of
crm.opportunities.v1 (the replica of accounts, and won deals becoming draft orders); and the
escalation schedule of approvals waiting too long."""
from __future__ import annotations

import os
from functools import partial

from crmkit.consumer import Dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import accounts, approvals, handover, won
from .bootstrap import context
from .events import DIRECTORY_TOPIC, OPPORTUNITIES_TOPIC, TOPIC_PARTITIONS


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    escalations = partial(approvals.escalation_loop, ctx.db, settings,
                          interval=float(os.environ.get("ORDERS_ESCALATION_INTERVAL_SECONDS", "60")))
    escalations.__name__ = "approval-escalations"
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[
            ConsumerSpec(group_id=f"{settings.topic_prefix}orders-directory", handlers={
                settings.topic(DIRECTORY_TOPIC): Dispatch(handover.directory_handlers(settings))}),
            # One group for the topic's two concerns: an account's events and its deals' share the
            # topic, and one dispatch table keeps them in one place.
            ConsumerSpec(group_id=f"{settings.topic_prefix}orders-accounts", handlers={
                settings.topic(OPPORTUNITIES_TOPIC): Dispatch({**accounts.ACCOUNT_HANDLERS,
                                                               **won.handlers(settings)})}),
        ],
        loops=[escalations],
    )


def main() -> None:
    run_worker(worker_spec())
