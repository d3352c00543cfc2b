"""Orders worker: the outbox relay; the consumers of the directory (replica and handovers), of
crm.opportunities.v1 (the replica of accounts, and won deals becoming draft orders) and of the
events performance counts (orders, payments, new accounts, activities); the escalation
schedule of approvals waiting too long; the daily schedule of performance alerts; and the daily attainment snapshots."""
from __future__ import annotations

import os
from functools import partial

from crmkit.consumer import Dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import accounts, actuals, alerts, approvals, attainment, handover, won
from .bootstrap import context
from .events import DIRECTORY_TOPIC, LEADS_TOPIC, OPPORTUNITIES_TOPIC, ORDERS_TOPIC, TOPIC_PARTITIONS


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    escalations = partial(approvals.escalation_loop, ctx.db, settings,
                          interval=float(os.environ.get("ORDERS_ESCALATION_INTERVAL_SECONDS", "60")))
    escalations.__name__ = "approval-escalations"
    schedules_every = float(os.environ.get("ORDERS_ALERT_INTERVAL_SECONDS", "300"))  # alerts and snapshots
    alert_schedule = partial(alerts.alert_loop, ctx.db, settings, interval=schedules_every)
    alert_schedule.__name__ = "performance-alerts"
    snapshots = partial(attainment.snapshot_loop, ctx.db, settings, interval=schedules_every)
    snapshots.__name__ = "attainment-snapshots"
    order_events, deal_events, lead_events = actuals.handlers(settings)
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
            # Actuals: a group of its own, so performance catches up on its own pace (and a replay
            # of it touches nothing else).
            ConsumerSpec(group_id=f"{settings.topic_prefix}orders-performance", handlers={
                settings.topic(ORDERS_TOPIC): Dispatch(order_events),
                settings.topic(OPPORTUNITIES_TOPIC): Dispatch(deal_events),
                settings.topic(LEADS_TOPIC): Dispatch(lead_events)},
                prepare={settings.topic(ORDERS_TOPIC): actuals.prepare_orders,
                         settings.topic(OPPORTUNITIES_TOPIC): actuals.prepare_activities,
                         settings.topic(LEADS_TOPIC): actuals.prepare_activities}),
        ],
        loops=[escalations, alert_schedule, snapshots],
    )


def main() -> None:
    run_worker(worker_spec())
