"""Notifications worker: the outbox relay; the consumers of the directory (the replica) and of the
leads, opportunities and orders topics (what raises a notification, and the reminders' dates); the
reminder ladder's schedule; the e-mail sender; and the morning agenda."""
from __future__ import annotations

import os
from functools import partial

from crmkit.consumer import Dispatch
from crmkit.directory import apply_directory_event, directory_dispatch
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import agenda, batch, email_delivery, raisers, reminders, webhook_delivery
from .bootstrap import context
from .db import DirectoryTeam, DirectoryUser
from .events import DIRECTORY_TOPIC, LEADS_TOPIC, OPPORTUNITIES_TOPIC, ORDERS_TOPIC, TOPIC_PARTITIONS


def _loop(fn, name: str, *args, interval_env: str, default: str, **kwargs):
    loop = partial(fn, *args, interval=float(os.environ.get(interval_env, default)), **kwargs)
    loop.__name__ = name
    return loop


def directory_handlers() -> dict:
    """The replica only: this service holds no records to hand over (the record services tell the
    successor what moved, and that is a notification here)."""
    return directory_dispatch(lambda uow, envelope: apply_directory_event(uow, envelope, DirectoryUser, DirectoryTeam),
                              lambda uow, envelope: None)


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings, db = ctx.settings, ctx.db
    return WorkerSpec(
        settings=settings, db=db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[
            ConsumerSpec(group_id=f"{settings.topic_prefix}notifications-directory", handlers={
                settings.topic(DIRECTORY_TOPIC): Dispatch(directory_handlers())}),
            ConsumerSpec(group_id=f"{settings.topic_prefix}notifications", handlers={
                settings.topic(LEADS_TOPIC): Dispatch(raisers.leads_handlers(settings)),
                settings.topic(OPPORTUNITIES_TOPIC): Dispatch(raisers.opportunities_handlers(settings)),
                settings.topic(ORDERS_TOPIC): Dispatch(raisers.orders_handlers(settings))},
                # One query each per batch for the people, preferences, reminders and past notifications.
                prepare={settings.topic(t): batch.prepare for t in (LEADS_TOPIC, OPPORTUNITIES_TOPIC, ORDERS_TOPIC)}),
        ],
        loops=[
            _loop(reminders.reminder_loop, "reminders", db, settings,
                  interval_env="NOTIFICATIONS_REMINDER_INTERVAL_SECONDS", default="30"),
            _loop(agenda.agenda_loop, "agenda", db, settings,
                  interval_env="NOTIFICATIONS_AGENDA_INTERVAL_SECONDS", default="60"),
            *(_senders(db, settings) if senders_in_worker() else []),
        ],
    )


def senders_in_worker() -> bool:
    """Whether the worker also sends (e-mail, webhooks): yes by default, so that one process does
    everything on a laptop (make run, SQLite). A deployment runs the senders as a process of their
    own (`python -m services.notifications sender`, NOTIFICATIONS_SENDERS_IN_WORKER=0 for the
    worker): sending then takes no time from writing the inbox (one interpreter lock per process),
    scales by its own replicas, and is the only part allowed to reach the SMTP relay and the
    internet."""
    return os.environ.get("NOTIFICATIONS_SENDERS_IN_WORKER", "1") not in ("0", "false", "no")


def _senders(db, settings) -> list:
    return [
        *(_loop(email_delivery.sender_loop, f"email-sender-{n}", db, settings, measure=n == 0,
                interval_env="NOTIFICATIONS_SEND_INTERVAL_SECONDS", default="1")
          for n in range(email_delivery.senders(db))),
        _loop(webhook_delivery.sender_loop, "webhook-sender", db, settings,
              interval_env="NOTIFICATIONS_WEBHOOK_INTERVAL_SECONDS", default="1"),
    ]


def sender_spec() -> WorkerSpec:
    """The senders alone: no consumer and no outbox relay (the worker's relay publishes the
    delivery.failed events they write; the outbox wakes it across processes)."""
    ctx = context()
    return WorkerSpec(settings=ctx.settings, db=ctx.db, tables=ctx.tables, relay=False, part="sender",
                      loops=_senders(ctx.db, ctx.settings))


def main() -> None:
    run_worker(worker_spec())


def sender_main() -> None:
    run_worker(sender_spec())
