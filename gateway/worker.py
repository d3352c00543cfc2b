"""Gateway worker: relays the directory outbox to crm.directory.v1, and follows each record-owning
service's topic for handover.completed (and nothing else on those busy topics)."""
from __future__ import annotations

from crmkit.consumer import Dispatch
from crmkit.directory_events import HANDOVER_COMPLETED
from crmkit.worker import ConsumerSpec, WorkerSpec, run_worker

from . import services
from .bootstrap import context, gateway
from .events import SERVICE_TOPICS, TOPIC_PARTITIONS


def worker_spec() -> WorkerSpec:
    ctx = context()
    settings = ctx.settings
    answer_topics = [settings.topic(SERVICE_TOPICS[s]) for s in gateway().config.handover_services]
    return WorkerSpec(
        settings=settings, db=ctx.db, tables=ctx.tables,
        topics={settings.topic(t): n for t, n in TOPIC_PARTITIONS.items()},
        consumers=[ConsumerSpec(
            group_id=f"{settings.topic_prefix}gateway-handovers",
            handlers=dict.fromkeys(answer_topics, Dispatch({(HANDOVER_COMPLETED, 1): services.record_handover_answer})))],
    )


def main() -> None:
    run_worker(worker_spec())
