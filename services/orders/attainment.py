"""Attainment snapshots (issue 18's weekly progress): once a day, for the day just ended, each subject's
attainment of every target it has for the month, quarter and year containing that day, as it stood at
the end of that day, published as performance.attainment. The opportunities service keeps them for
its weekly progress report ("target attainment where targets exist"); targets and figures stay here.

The `schedule_runs` record ("attainment-snapshots") moves in the same transaction as the events, so a
day is published once, and days missed while the worker was down are caught up (62 at most)."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select

from crmkit import clock
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings

from . import scorecard
from .alerts import ATTAINMENT_CAP, CATCH_UP_DAYS, as_of, watch
from .events import PERFORMANCE_ATTAINMENT, event
from .performance_db import ScheduleRun, Target

SCHEDULE = "attainment-snapshots"


def snapshot_day(uow: UnitOfWork, settings: Settings, day: dt.date) -> int:
    """Publish the attainments of `day`; returns how many."""
    w = watch(uow, settings)
    periods = list(scorecard.periods_of_month(f"{day.year}-{day.month:02d}").values())  # month, quarter, year
    targets: dict[tuple, list] = defaultdict(list)
    for t in uow.session.execute(select(Target.subject_type, Target.subject_id, Target.metric, Target.period,
                                        Target.value, Target.distribution).where(
            Target.scope == "|", Target.period.like(f"{day.year}%"))
            .order_by(Target.subject_type, Target.subject_id, Target.metric)):
        targets[(t.subject_type, t.subject_id, t.metric)].append(t)
    published = 0
    for (subject_type, subject_id, metric), theirs in targets.items():
        for period in periods:
            target = scorecard.target_in(theirs, period)
            if target is None or target <= 0:
                continue
            actual = as_of(uow, w, (subject_type, subject_id), metric, period, day)
            uow.publish(*event(settings, PERFORMANCE_ATTAINMENT, f"{subject_type}:{subject_id}", {"attainment": {
                "subject_type": subject_type, "subject_id": subject_id, "metric": metric, "period": period,
                "day": day, "target": target, "actual": actual,
                "attainment": min(scorecard.attainment(actual, target), ATTAINMENT_CAP)}}, actor=None))
            published += 1
    return published


def run_snapshots(db: Database, settings: Settings, today: dt.date | None = None) -> list[dt.date]:
    """Publish every day ended since the last one published (yesterday, after a normal night)."""
    today = today or scorecard.local_day(clock.now())
    with db.uow() as uow:
        run = uow.session.get(ScheduleRun, SCHEDULE, with_for_update=True)
        first = today - dt.timedelta(days=1) if run is None else run.last_day + dt.timedelta(days=1)
        first = max(first, today - dt.timedelta(days=CATCH_UP_DAYS))
        days = [first + dt.timedelta(days=n) for n in range((today - first).days)]
        if not days:
            return []
        for day in days:
            snapshot_day(uow, settings, day)
        if run is None:
            uow.session.add(ScheduleRun(name=SCHEDULE, last_day=days[-1], ran_at=utcnow()))
        else:
            run.last_day, run.ran_at = days[-1], utcnow()
        uow.commit()
    return days
