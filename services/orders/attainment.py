"""Attainment snapshots (issue 18's weekly progress): once a day, for a day that ended at least GRACE
ago, each subject's attainment of every target it has for the month, quarter and year containing
that day, as it stood at the end of that day, published as performance.attainment. The opportunities
service keeps them for its weekly progress report ("target attainment where targets exist"); targets
and figures stay here.

- A person's figure is also given split by the team the credit was earned in (`by_team`), so a
  manager can be shown what was earned in the teams they manage and not a former team's (as this
  service's own GET /performance does, performance.credited_in).
- A day is read with one grouped query over the ledger, whatever the number of people and teams.
- Each day commits on its own with the `schedule_runs` record ("attainment-snapshots"), so a day is
  published once, a long catch-up (62 days at most) keeps what it has done if it stops, and days
  missed while the worker was down are caught up.
- Targets narrowed to a product line or region are not snapshotted (the overall ones are)."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import func, select

from crmkit import clock
from crmkit.db import Database, UnitOfWork, utcnow
from crmkit.settings import Settings
from crmkit.teams import descendants

from . import scorecard
from .alerts import ATTAINMENT_CAP, CATCH_UP_DAYS
from .events import PERFORMANCE_ATTAINMENT, event
from .performance import team_tree
from .performance_db import PerformanceEntry, ScheduleRun, Target

log = logging.getLogger(__name__)
SCHEDULE = "attainment-snapshots"
# A day is snapshotted this long after it ended, so orders confirmed just before midnight and applied
# by the performance consumer a little later are in it.
GRACE = dt.timedelta(hours=1)


def _figures(uow: UnitOfWork, day: dt.date) -> dict:
    """(user, team, metric, month) -> what was earned by the end of `day`, for the months of its year
    up to its own: one grouped query."""
    months = [f"{day.year}-{m:02d}" for m in range(1, day.month + 1)]
    out: dict = defaultdict(Decimal)
    for user, team, metric, month, amount in uow.session.execute(
            select(PerformanceEntry.user_id, PerformanceEntry.team_id, PerformanceEntry.metric, PerformanceEntry.month,
                   func.sum(PerformanceEntry.amount))
            .where(PerformanceEntry.month.in_(months), PerformanceEntry.occurred_on <= day)
            .group_by(PerformanceEntry.user_id, PerformanceEntry.team_id, PerformanceEntry.metric,
                      PerformanceEntry.month)):
        out[(user, team, metric, month)] += Decimal(amount or 0)
    return out


def _clamped(value: Decimal) -> Decimal:
    return max(-ATTAINMENT_CAP, min(value, ATTAINMENT_CAP))


def snapshot_day(uow: UnitOfWork, settings: Settings, day: dt.date) -> int:
    """Publish the attainments of `day`; returns how many."""
    periods = list(scorecard.periods_of_month(f"{day.year}-{day.month:02d}").values())  # month, quarter, year
    targets: dict[tuple, list] = defaultdict(list)
    for t in uow.session.execute(select(Target.subject_type, Target.subject_id, Target.metric, Target.period,
                                        Target.value, Target.distribution).where(
            Target.scope == "|", Target.period.like(f"{day.year}%"))
            .order_by(Target.subject_type, Target.subject_id, Target.metric)):
        targets[(t.subject_type, t.subject_id, t.metric)].append(t)
    if not targets:
        return 0
    figures, tree = _figures(uow, day), team_tree(uow)
    published = 0
    for (subject_type, subject_id, metric), theirs in targets.items():
        below = descendants([subject_id], tree) if subject_type == "team" else None
        for period in periods:
            try:
                target = scorecard.target_in(theirs, period)
            except ValueError:  # a stored distribution this version cannot read: that target alone waits
                log.exception("a target could not be read", extra={"subject_id": subject_id, "metric": metric})
                continue
            if target is None or target <= 0:
                continue
            months = set(scorecard.months_of(period))
            by_team: dict = defaultdict(Decimal)
            for (user, team, m, month), amount in figures.items():
                if m == metric and month in months and (user == subject_id if below is None else team in below):
                    by_team[team] += amount
            actual = sum(by_team.values(), Decimal(0))
            data = {"subject_type": subject_type, "subject_id": subject_id, "metric": metric, "period": period,
                    "day": day, "target": target, "actual": actual,
                    "attainment": _clamped(scorecard.attainment(actual, target))}
            if below is None:
                data["by_team"] = [{"team_id": team or None, "actual": amount}
                                   for team, amount in sorted(by_team.items()) if amount]
            uow.publish(*event(settings, PERFORMANCE_ATTAINMENT, f"{subject_type}:{subject_id}", {"attainment": data},
                               actor=None))
            published += 1
    return published


def run_snapshots(db: Database, settings: Settings, now: dt.datetime | None = None) -> list[dt.date]:
    """Publish every day ended (GRACE ago) since the last one published; each day in a transaction of
    its own with the record of it."""
    ready = scorecard.local_day((now or clock.now()) - GRACE)  # the first day not to publish yet
    done: list[dt.date] = []
    while True:
        with db.uow() as uow:
            run = uow.session.get(ScheduleRun, SCHEDULE, with_for_update=True)
            first = ready - dt.timedelta(days=1) if run is None else run.last_day + dt.timedelta(days=1)
            day = max(first, ready - dt.timedelta(days=CATCH_UP_DAYS))
            if day >= ready:
                return done
            snapshot_day(uow, settings, day)
            if run is None:
                uow.session.add(ScheduleRun(name=SCHEDULE, last_day=day, ran_at=utcnow()))
            else:
                run.last_day, run.ran_at = day, utcnow()
            uow.commit()
        done.append(day)


def snapshot_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 300.0) -> None:
    """The worker's schedule of snapshots: at start and every `interval` seconds, the days ready since."""
    while not stop.is_set():
        try:
            run_snapshots(db, settings)
        except Exception:  # a schedule must outlive one bad run; it logs and tries again
            log.exception("attainment snapshot schedule failed")
        stop.wait(interval)
