"""Leads worker: the outbox relay, the consumers of the marketing and directory topics and of the
opportunities service's conversion refusals and lead visits, and the CSV import runner."""
from __future__ import annotations

from functools import partial

from crmkit.consumer import Dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import conversion, handover, imports, intake, visits
from .bootstrap import context
from .events import (
    DIRECTORY_TOPIC,
    LEAD_CONVERSION_REJECTED,
    MARKETING_INBOUND_TOPIC,
    MARKETING_LEAD_SUBMITTED,
    OPPORTUNITIES_TOPIC,
    TOPIC_PARTITIONS,
    VISIT_CHECKED_IN,
)


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    prefix = settings.topic_prefix
    import_loop = partial(imports.run_imports, ctx.db, settings)
    import_loop.__name__ = "lead-imports"
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[
            # Anything on the marketing topic but a marketing.lead.submitted v1 is a producer's
            # mistake: dead-lettered with the reason.
            ConsumerSpec(group_id=f"{prefix}leads-marketing-inbound", handlers={
                settings.topic(MARKETING_INBOUND_TOPIC): Dispatch({
                    (MARKETING_LEAD_SUBMITTED, 1): lambda uow, e: intake.ingest_marketing_lead(uow, settings, e),
                }, others_rejected=True)},
                prepare={settings.topic(MARKETING_INBOUND_TOPIC): intake.prepare_marketing_batch}),
            ConsumerSpec(group_id=f"{prefix}leads-directory", handlers={
                settings.topic(DIRECTORY_TOPIC): Dispatch(handover.directory_handlers(settings))}),
            # What the opportunities service sends back: refused conversions, and visits to leads
            # checked in (logged here as the lead's activity). The group keeps its first name.
            ConsumerSpec(group_id=f"{prefix}leads-conversion-refusals", handlers={
                settings.topic(OPPORTUNITIES_TOPIC): Dispatch({
                    (LEAD_CONVERSION_REJECTED, 1): lambda uow, e: conversion.roll_back_conversion(uow, settings, e),
                    (VISIT_CHECKED_IN, 1): lambda uow, e: visits.log_visit(uow, settings, e),
                })}),
        ],
        loops=[import_loop],
    )


def main() -> None:
    run_worker(worker_spec())
