"""Opportunities worker: the outbox relay; the consumers of lead.converted, of the directory (replica
and handovers), of order revenue (tiers) and of what the reps' days hold elsewhere (daily reports); the
tier schedule; collision re-detection after account renames; and the visits' end of day."""
from __future__ import annotations

import os
from functools import partial

from crmkit.consumer import Dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import conversion, day_facts, detection, handover, tiering, visits
from .bootstrap import context
from .events import (
    DIRECTORY_TOPIC,
    LEADS_TOPIC,
    ORDERS_TOPIC,
    TOPIC_PARTITIONS,
)


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    prefix, leads, orders = settings.topic_prefix, settings.topic(LEADS_TOPIC), settings.topic(ORDERS_TOPIC)
    tier_loop = partial(tiering.tier_loop, ctx.db, settings)
    tier_loop.__name__ = "account-tiers"
    recheck_loop = partial(detection.recheck_loop, ctx.db, settings)
    recheck_loop.__name__ = "collision-rechecks"
    sweep_loop = partial(visits.sweep_loop, ctx.db, settings,
                         interval=float(os.environ.get("OPPORTUNITIES_VISIT_SWEEP_SECONDS", "60")))
    sweep_loop.__name__ = "visit-day-end"
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[
            ConsumerSpec(group_id=f"{prefix}opportunities-conversions",
                         handlers={leads: Dispatch(conversion.handlers(settings))}),
            ConsumerSpec(group_id=f"{prefix}opportunities-directory", handlers={
                settings.topic(DIRECTORY_TOPIC): Dispatch(handover.directory_handlers(settings))}),
            ConsumerSpec(group_id=f"{prefix}opportunities-revenue", handlers={orders: Dispatch(tiering.ORDER_HANDLERS)}),
            # What the reps' days hold elsewhere: new leads and lead activities, confirmed orders and payments.
            ConsumerSpec(group_id=f"{prefix}opportunities-day-facts", handlers={
                leads: Dispatch(day_facts.LEAD_HANDLERS), orders: Dispatch(day_facts.ORDER_HANDLERS)}),
        ],
        loops=[tier_loop, recheck_loop, sweep_loop],
    )


def main() -> None:
    run_worker(worker_spec())
