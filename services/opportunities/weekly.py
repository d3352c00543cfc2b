"""Weekly progress (周进度控制, CONTRACT §4): per rep or per team, week over week, what was planned
and done and what it brought, target attainment where targets exist; and visit effectiveness, the
share of visits to accounts followed by a stage move or an order of the rep's on that account within
N days (visit_progress.py).

Every figure is of records owned by the rows' owner: the caller's own, their teams' (a manager),
everyone's (executives, admins). A deal the caller only helps on (virtual team) is its owner's
figure, not theirs, so it never brings another team's numbers into view."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import and_, case, func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.periods import day_bounds
from crmkit.visibility import SEES_EVERYTHING, VisibilityRule, visible

from .day_db import AttainmentSnapshot, KnownLead, OrderFact, PaymentFact, PipelineChange, Visit
from .db import DirectoryUser, Opportunity

ZERO = Decimal("0.00")


def _scope(principal: Principal, model):
    return visible(principal, VisibilityRule(owner_column=model.owner_id, team_column=model.team_id))


def _key(model, group_by: str):
    return getattr(model, "owner_id" if group_by == "owner" else "team_id")


def week_label(monday: dt.date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def _blank() -> dict:
    return {"visits_planned": 0, "visits_done": 0, "visits_missed": 0, "new_leads": 0,
            "new_opportunities": {"count": 0, "amount": ZERO}, "pipeline_change": ZERO,
            "orders": {"count": 0, "amount": ZERO}, "collected": ZERO, "visits_effective": 0,
            "visit_effectiveness": None, "attainment": []}


def weekly_progress(uow: UnitOfWork, principal: Principal, week: dt.date, group_by: str, weeks: int,
                    within_days: int) -> dict:
    mondays = [week - dt.timedelta(weeks=n) for n in range(weeks - 1, -1, -1)]
    figures: dict = defaultdict(lambda: {m: _blank() for m in mondays})
    for monday in mondays:
        _one_week(uow, principal, monday, group_by, within_days, figures)
    groups = [{"key": key, "weeks": [{"week": week_label(m), **f[m]} for m in mondays]}
              for key, f in sorted(figures.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))]
    return {"week": week_label(week), "group_by": group_by, "effective_within_days": within_days, "groups": groups}


def _one_week(uow: UnitOfWork, principal: Principal, monday: dt.date, group_by: str, within_days: int,
              figures: dict) -> None:
    s, sunday = uow.session, monday + dt.timedelta(days=6)
    start, end = day_bounds(monday, sunday)

    def at(key) -> dict:
        return figures[key][monday]

    key = _key(Visit, group_by)
    for k, status, count in s.execute(select(key, Visit.status, func.count()).where(
            _scope(principal, Visit), Visit.day >= monday, Visit.day <= sunday).group_by(key, Visit.status)):
        if status in ("planned", "done", "missed"):  # a rescheduled visit is counted where it moved to
            at(k)["visits_planned"] += count
        if status in ("done", "missed"):
            at(k)[f"visits_{status}"] += count
    key = _key(KnownLead, group_by)
    for k, count in s.execute(select(key, func.count()).where(
            _scope(principal, KnownLead), KnownLead.status != "deleted", KnownLead.created_at >= start,
            KnownLead.created_at < end).group_by(key)):
        at(k)["new_leads"] = count
    key = _key(Opportunity, group_by)
    for k, count, amount in s.execute(select(key, func.count(), func.sum(Opportunity.amount)).where(
            _scope(principal, Opportunity), Opportunity.deleted_at.is_(None), Opportunity.created_at >= start,
            Opportunity.created_at < end).group_by(key)):
        at(k)["new_opportunities"] = {"count": count, "amount": Decimal(amount or 0)}
    key = _key(PipelineChange, group_by)
    for k, delta in s.execute(select(key, func.sum(PipelineChange.delta)).where(
            _scope(principal, PipelineChange), PipelineChange.changed_at >= start, PipelineChange.changed_at < end)
            .group_by(key)):
        at(k)["pipeline_change"] = Decimal(delta or 0)
    key = _key(OrderFact, group_by)
    for k, count, amount in s.execute(select(key, func.count(), func.sum(OrderFact.total)).where(
            _scope(principal, OrderFact), OrderFact.cancelled_at.is_(None), OrderFact.confirmed_at >= start,
            OrderFact.confirmed_at < end).group_by(key)):
        at(k)["orders"] = {"count": count, "amount": Decimal(amount or 0)}
    key = _key(PaymentFact, group_by)
    for k, amount in s.execute(select(key, func.sum(PaymentFact.amount)).where(
            _scope(principal, PaymentFact), PaymentFact.paid_on >= monday, PaymentFact.paid_on <= sunday)
            .group_by(key)):
        at(k)["collected"] = Decimal(amount or 0)
    _effectiveness(uow, principal, monday, sunday, group_by, within_days, at)
    _attainment(uow, principal, monday, sunday, group_by, at)


# As the orders service has it: margin is not for these roles, their own included.
COST_METRICS, COST_HIDDEN_FROM = frozenset({"gross_margin"}), frozenset({"rep", "service", "marketing"})


def _attainment(uow: UnitOfWork, principal: Principal, monday: dt.date, sunday: dt.date, group_by: str, at) -> None:
    """Where targets exist: each target's attainment as the orders service last published it that
    week (performance.attainment, at the end of a day). A person's for themselves, executives and
    the managers of their team, who are shown the part earned in the teams they manage (not a former
    team's); a team's for its managers and executives (a rep is not shown the team's total, which is
    his teammates' figures too). Margin is not shown to reps."""
    snap = AttainmentSnapshot
    keys = (snap.subject_type, snap.subject_id, snap.metric, snap.period)
    in_week = [snap.subject_type == ("user" if group_by == "owner" else "team"), snap.day >= monday, snap.day <= sunday]
    manager = principal.role == "manager"
    if principal.role not in SEES_EVERYTHING:
        # The subjects named outright, so the database walks the snapshots' key for each of them rather
        # than every person's snapshots of the week (a team of 20 among 1,000).
        if group_by == "owner":
            people = [principal.user_id]
            if manager and principal.manages:
                people += uow.session.execute(select(DirectoryUser.id).where(
                    DirectoryUser.team_id.in_(principal.manages))).scalars().all()
            in_week.append(snap.subject_id.in_(sorted(set(people))))
        else:
            in_week.append(snap.subject_id.in_(principal.manages if manager else ()))
    if principal.role in COST_HIDDEN_FROM:
        in_week.append(snap.metric.notin_(COST_METRICS))
    last = select(*keys, func.max(snap.day).label("day")).where(*in_week).group_by(*keys).subquery()
    rows = uow.session.execute(select(snap).join(last, and_(*(k == last.c[k.key] for k in keys),
                                                           snap.day == last.c.day))
                               .order_by(snap.subject_id, snap.metric, snap.period)).scalars()
    for row in rows:
        actual, attainment = row.actual, row.attainment
        if group_by == "owner" and manager and row.subject_id != principal.user_id and row.by_team is not None:
            actual = sum((Decimal(v) for team, v in row.by_team.items() if team in principal.manages), Decimal(0))
            attainment = (actual * 100 / row.target).quantize(Decimal("0.1"), ROUND_HALF_UP) if row.target > 0 else None
        at(row.subject_id)["attainment"].append({"metric": row.metric, "period": row.period, "target": row.target,
                                                 "actual": actual, "attainment": attainment, "as_of": row.day})


def _effectiveness(uow: UnitOfWork, principal: Principal, monday: dt.date, sunday: dt.date, group_by: str,
                   within_days: int, at) -> None:
    """A done visit to an account is effective when the rep's next stage move (won and lost included)
    or confirmed order on that account came within `within_days` of the check-in (visit_progress.py
    keeps the gap on the visit). Only the rep's own deals and orders count: another team's deal on
    the same account changes nothing here."""
    key = _key(Visit, group_by)
    effective = case((Visit.followed_after <= within_days * 86400, 1), else_=0)
    for k, done, followed in uow.session.execute(select(key, func.count(), func.sum(effective)).where(
            _scope(principal, Visit), Visit.day >= monday, Visit.day <= sunday, Visit.status == "done",
            Visit.account_id.is_not(None)).group_by(key)):
        at(k)["visits_effective"] = int(followed or 0)
        at(k)["visit_effectiveness"] = round(int(followed or 0) / done, 4)
