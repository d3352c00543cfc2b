"""Performance alerts (issue 16, CONTRACT §4): rules as data (`GET/PUT /alert-rules`), and the two ways
they fire, each at most once per rule, subject and period (the `alert_firings` record):

- `target_reached`: a subject's attainment of a metric reaches the rule's threshold. Checked as
  actuals change (the performance consumer calls `changed` in the same transaction as the change),
  and again by the daily schedule (a target lowered below what was done fires without an event).
- `pace`: on day N of the period, attainment is below X%. Checked by the daily schedule, which runs
  every day since the last day it ran (the `schedule_runs` record), so a day missed while the worker
  was down is caught up, and a day run twice fires nothing twice.

A firing is keyed by what the rule asks (its condition), not its name: a rule renamed fires nothing
again; a threshold changed is a new rule. Subjects are users and teams with a target for the metric
in the period. An alert names whom to
tell: the rep, their manager (the team's, or the parent team's when the rep is the manager) and the
company's executives."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache

from sqlalchemy import func, select

from crmkit import clock
from crmkit.auth import Principal
from crmkit.db import Database, UnitOfWork, upsert, utcnow
from crmkit.errors import ValidationFailed
from crmkit.settings import Settings
from crmkit.teams import TeamNode, descendants

from . import batch, documents, scorecard
from .db import DirectoryTeam, DirectoryUser
from .events import PERFORMANCE_PACE_WARNING, PERFORMANCE_TARGET_REACHED, event
from .performance import team_tree
from .performance_db import ActualTotal, AlertFiring, PerformanceDocument, PerformanceEntry, ScheduleRun, Target

log = logging.getLogger(__name__)

RULES = "alerts"
DEFAULT_RULES = {"rules": [
    {"name": "monthly revenue reached", "kind": "target_reached", "metric": "revenue", "period_kind": "month",
     "threshold_pct": "100"},
    {"name": "monthly revenue pace", "kind": "pace", "metric": "revenue", "period_kind": "month", "day": 20,
     "below_pct": "50"}]}
# The last day number every period of the kind has: a rule for day 31 of a month would skip February.
LAST_SURE_DAY = {"month": 28, "quarter": 90, "year": 365}
# Attainment as recorded with a firing: a target of 0.01 against millions is a number no column holds.
ATTAINMENT_CAP = Decimal("999999999999.9")
SCHEDULE = "performance-alerts"
CATCH_UP_DAYS = 62  # a worker down longer than this catches up the last 62 days, not years of them


def rules(uow: UnitOfWork) -> PerformanceDocument:
    return documents.read(uow, RULES, DEFAULT_RULES)


def put_rules(uow: UnitOfWork, principal: Principal, document: dict, check_version) -> PerformanceDocument:
    errors: list[str] = []
    names = [r["name"] for r in document["rules"]]
    if len(set(names)) != len(names):
        errors.append("a rule name is used twice")
    for r in document["rules"]:
        if r["kind"] == "target_reached" and r.get("threshold_pct") is None:
            errors.append(f"{r['name']}: a target_reached rule has a threshold_pct")
        if r["kind"] == "pace":
            if r.get("day") is None or r.get("below_pct") is None:
                errors.append(f"{r['name']}: a pace rule has a day and a below_pct")
            elif r["day"] > LAST_SURE_DAY[r["period_kind"]]:
                errors.append(f"{r['name']}: day {r['day']} does not come in every {r['period_kind']} "
                              f"(at most {LAST_SURE_DAY[r['period_kind']]})")
    if errors:
        raise ValidationFailed("the alert rules do not hold together", errors={"rules": errors})
    return documents.write(uow, principal, RULES, DEFAULT_RULES, document, check_version)


# ---- evaluation -------------------------------------------------------------------------------------------
@dataclass
class Watch:
    """What one transaction gathers to check alerts (in its batch): the target_reached checks its
    changes call for, done together when it commits, after the ledger is written: a consumer batch
    of 500 events reads its subjects' targets, figures and firings in a few queries, not per event."""
    settings: Settings
    rules: list[dict]
    parents: dict[str, str | None]
    teams: list[TeamNode]
    due: dict[tuple, dt.date] = field(default_factory=dict)  # (rule index, subject, period) -> day
    executives: list[str] | None = None


def watch(uow: UnitOfWork, settings: Settings) -> Watch:
    """This transaction's watch (one per unit of work, in its batch); it checks what it gathered
    when the transaction commits, after the batch's ledger is written."""
    b = batch.of(uow)
    if b.watch is None:
        teams = team_tree(uow)
        b.watch = Watch(settings, rules(uow).document["rules"], {t.id: t.parent_team_id for t in teams}, teams)
        uow.before_commit(lambda: _check_due(uow, b.watch))
    return b.watch


def _chain(w: Watch, team_id: str) -> list[str]:
    """The team and the teams above it (a loop in the replica cannot hang this)."""
    out: list[str] = []
    while team_id and team_id not in out:
        out.append(team_id)
        team_id = w.parents.get(team_id)
    return out


def _subjects(w: Watch, user_id: str, team_id: str) -> list[tuple[str, str]]:
    return [("user", user_id), *(("team", t) for t in _chain(w, team_id))]


def changed(uow: UnitOfWork, rows: list[dict], sign: int) -> None:
    """Actuals changed by `rows` (the performance consumer, in its transaction): note the
    target_reached checks they call for (each subject, rule and period once; the latest day). A
    transaction without a watch (a migration, a repair) checks nothing."""
    w = batch.of(uow).watch
    if w is None or sign < 0:
        return
    # An order's lines share their person, team, metric and day: each combination looked at once.
    for user, team, metric, month, day in {(r["user_id"], r["team_id"], r["metric"], r["month"], r["occurred_on"])
                                           for r in rows}:
        for i, rule in enumerate(w.rules):
            if rule["kind"] == "target_reached" and rule["metric"] == metric:
                for subject in _subjects(w, user, team):
                    key = (i, subject, scorecard.periods_of_month(month)[rule["period_kind"]])
                    w.due[key] = max(w.due.get(key, day), day)


def _check_due(uow: UnitOfWork, w: Watch) -> None:
    due, w.due = w.due, {}
    _evaluate(uow, w, [(w.rules[i], subject, period, day) for (i, subject, period), day in due.items()])


@lru_cache(maxsize=256)
def _condition(asked: tuple) -> str:
    return hashlib.sha256(json.dumps(asked).encode()).hexdigest()


def condition(rule: dict) -> str:
    """What a rule asks, whatever it is called."""
    return _condition(tuple(None if rule.get(k) is None else str(rule[k])
                            for k in ("kind", "metric", "period_kind", "threshold_pct", "day", "below_pct")))


def _evaluate(uow: UnitOfWork, w: Watch, checks: list[tuple[dict, tuple[str, str], str, dt.date]]) -> None:
    """Check (rule, subject, period, day) together: the subjects' targets, their figures (a team's:
    what was earned in it and the teams under it) and the firings already made, in one query each."""
    if not checks:
        return
    metrics = sorted({rule["metric"] for rule, *_ in checks})
    ids = sorted({subject[1] for _, subject, _, _ in checks})
    periods = {period for *_, period, _ in checks}
    months = sorted({m for p in periods for m in scorecard.months_of(p)})
    # The target periods that can give these periods a target: their months, quarters and years.
    candidates = sorted({*months, *(scorecard.periods_of_month(m)["quarter"] for m in months), *(m[:4] for m in months)})
    targets: dict[tuple, list] = defaultdict(list)
    for t in uow.session.execute(select(Target.subject_type, Target.subject_id, Target.metric, Target.period,
                                        Target.value, Target.distribution).where(
            Target.subject_id.in_(ids), Target.metric.in_(metrics), Target.scope == "|",
            Target.period.in_(candidates))):
        targets[(t.subject_type, t.subject_id, t.metric)].append(t)
    wanted = [(rule, subject, period, day) for rule, subject, period, day in checks
              if targets.get((*subject, rule["metric"]))]
    if not wanted:
        return
    below = {s[1]: descendants([s[1]], w.teams) for _, s, _, _ in wanted if s[0] == "team"}
    users = sorted({s[1] for _, s, _, _ in wanted if s[0] == "user"})
    teams = sorted(set().union(*below.values())) if below else []
    by_user, by_team = defaultdict(Decimal), defaultdict(Decimal)
    # The totals by person and by team (actual_totals): a row per subject, metric and month.
    for kind, ids_of_kind, into in (("user", users, by_user), ("team", teams, by_team)):
        if ids_of_kind:
            for subject_id, metric, month, amount in uow.session.execute(
                    select(ActualTotal.subject_id, ActualTotal.metric, ActualTotal.month, ActualTotal.amount).where(
                        ActualTotal.kind == kind, ActualTotal.subject_id.in_(ids_of_kind),
                        ActualTotal.metric.in_(metrics), ActualTotal.month.in_(months))):
                into[(subject_id, metric, month)] += amount
    # By the unique index's leading column: the rules' firings in these periods (a few per subject).
    fired = {tuple(f) for f in uow.session.execute(select(
        AlertFiring.condition, AlertFiring.subject_type, AlertFiring.subject_id, AlertFiring.period).where(
        AlertFiring.condition.in_(sorted({condition(rule) for rule, *_ in wanted})),
        AlertFiring.period.in_(sorted(periods))))}
    # In one order (two workers' batches, or a batch and the schedule, insert firings in the same
    # order and so never wait on each other crosswise).
    wanted.sort(key=lambda c: (condition(c[0]), *c[1], c[2]))
    for rule, subject, period, day in wanted:
        if (condition(rule), *subject, period) in fired:
            continue
        target = scorecard.target_in(targets[(*subject, rule["metric"])], period)
        if target is None or target <= 0:
            continue
        if rule["kind"] == "target_reached":
            keys = [(subject[1], rule["metric"], m) for m in scorecard.months_of(period)] if subject[0] == "user" \
                else [(t, rule["metric"], m) for t in below[subject[1]] for m in scorecard.months_of(period)]
            actual = sum(((by_user if subject[0] == "user" else by_team).get(k, 0) for k in keys), Decimal(0))
            attainment = scorecard.attainment(actual, target)
            due = attainment >= Decimal(rule["threshold_pct"])
        else:
            actual = _as_of(uow, w, subject, rule["metric"], period, day)
            attainment = scorecard.attainment(actual, target)
            due = attainment < Decimal(rule["below_pct"])
        if due:
            fired.add((condition(rule), *subject, period))
            _fire(uow, w, rule, subject, period, day, target, actual, attainment)


def _as_of(uow: UnitOfWork, w: Watch, subject: tuple[str, str], metric: str, period: str, day: dt.date) -> Decimal:
    """The figure as it stood at the end of `day` (a pace day caught up later is judged as of that
    day, not on what was sold since): the ledger's entries up to that day."""
    who = PerformanceEntry.user_id == subject[1] if subject[0] == "user" else \
        PerformanceEntry.team_id.in_(sorted(descendants([subject[1]], w.teams)))
    return Decimal(uow.session.execute(select(func.coalesce(func.sum(PerformanceEntry.amount), 0)).where(
        who, PerformanceEntry.metric == metric, PerformanceEntry.month.in_(scorecard.months_of(period)),
        PerformanceEntry.occurred_on <= day)).scalar_one())


def _recipients(uow: UnitOfWork, w: Watch, subject: tuple[str, str]) -> dict:
    if w.executives is None:
        w.executives = sorted(uow.session.execute(select(DirectoryUser.id).where(
            DirectoryUser.role == "executive", DirectoryUser.active.is_(True))).scalars())
    rep, team_id = None, subject[1]
    if subject[0] == "user":
        rep = subject[1]
        person = uow.session.get(DirectoryUser, rep)
        team_id = person.team_id if person else None
    manager = None
    for team in _chain(w, team_id) if team_id else []:
        row = uow.session.get(DirectoryTeam, team)
        if row is not None and row.manager_id and row.manager_id != rep:
            manager = row.manager_id
            break
    return {"rep_id": rep, "manager_id": manager, "executive_ids": w.executives}


def _fire(uow: UnitOfWork, w: Watch, rule: dict, subject: tuple[str, str], period: str, day: dt.date,
          target: Decimal, actual: Decimal, attainment: Decimal) -> None:
    """Record the firing and publish it, unless it fired before: the unique record decides, so two
    workers (or the schedule and the consumer) racing fire once."""
    firing_id = uuid.uuid4()
    inserted = uow.session.execute(upsert(uow.session, AlertFiring).values(
        id=firing_id, rule=rule["name"], condition=condition(rule), kind=rule["kind"], subject_type=subject[0],
        subject_id=subject[1], metric=rule["metric"], period=period, attainment=min(attainment, ATTAINMENT_CAP),
        fired_on=day, fired_at=utcnow())
        .on_conflict_do_nothing(index_elements=["condition", "subject_type", "subject_id", "period"])
        .returning(AlertFiring.id)).first()  # rowcount is -1 here on PostgreSQL: ask for the row instead
    if inserted is None:
        return
    kind = PERFORMANCE_TARGET_REACHED if rule["kind"] == "target_reached" else PERFORMANCE_PACE_WARNING
    alert = {"id": firing_id, "rule": rule["name"], "kind": rule["kind"], "subject_type": subject[0],
             "subject_id": subject[1], "metric": rule["metric"], "period": period,
             "day_of_period": scorecard.day_of_period(day, period), "fired_on": day, "target": target,
             "actual": actual, "attainment": attainment, "threshold_pct": rule.get("threshold_pct"),
             "below_pct": rule.get("below_pct"), **_recipients(uow, w, subject)}
    uow.publish(*event(w.settings, kind, f"{subject[0]}:{subject[1]}", {"alert": alert}, actor=None))


# ---- the daily schedule ------------------------------------------------------------------------------------
def check_day(uow: UnitOfWork, settings: Settings, day: dt.date) -> None:
    """Every rule for `day`: pace rules whose day of the period it is, and target_reached ones (a
    target lowered fires without an event), for every subject with a target on the rule's metric."""
    w = watch(uow, settings)
    checks = []
    for rule in w.rules:
        period = scorecard.period_of(day, rule["period_kind"])
        if rule["kind"] == "pace" and scorecard.day_of_period(day, period) != rule["day"]:
            continue
        subjects = uow.session.execute(select(Target.subject_type, Target.subject_id).where(
            Target.metric == rule["metric"], Target.scope == "|", Target.period.like(f"{period[:4]}%"))
            .distinct().order_by(Target.subject_type, Target.subject_id)).all()
        checks += [(rule, tuple(subject), period, day) for subject in subjects]
    _evaluate(uow, w, checks)


def run_schedule(db: Database, settings: Settings, today: dt.date | None = None) -> list[dt.date]:
    """Check every day since the last one checked, through today; returns the days checked. The
    record of the last day moves in the same transaction as the firings."""
    today = today or scorecard.local_day(clock.now())
    with db.uow() as uow:
        run = uow.session.get(ScheduleRun, SCHEDULE, with_for_update=True)
        first = today if run is None else run.last_day + dt.timedelta(days=1)
        first = max(first, today - dt.timedelta(days=CATCH_UP_DAYS - 1))
        days = [first + dt.timedelta(days=n) for n in range((today - first).days + 1)]
        # Today is checked again on every run (a target lowered this afternoon); firings stay once.
        days = days or [today]
        for day in days:
            check_day(uow, settings, day)
        if run is None:
            uow.session.add(ScheduleRun(name=SCHEDULE, last_day=today, ran_at=utcnow()))
        else:  # ran_at says the schedule is alive (its every run); last_day never goes back
            run.last_day, run.ran_at = max(run.last_day, today), utcnow()
        uow.commit()
    return days


def alert_loop(db: Database, settings: Settings, stop: threading.Event, interval: float = 300.0) -> None:
    """The worker's daily schedule: runs at start and every `interval` seconds after; each run checks
    the days not checked yet (and today again)."""
    while not stop.is_set():
        try:
            run_schedule(db, settings)
        except Exception:  # a schedule must outlive one bad run; it logs and tries again
            log.exception("performance alert schedule failed")
        stop.wait(interval)
