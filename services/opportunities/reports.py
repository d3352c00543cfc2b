"""Reports, computed in SQL over the rows the caller may see (CONTRACT §2, §4).

Amounts are summed per currency: adding yuan to dollars would be a wrong number, not a report.
"""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.periods import Period
from crmkit.visibility import SEES_EVERYTHING

from .db import Opportunity, opportunity_visible
from .domain import BEST_CASE_FROM, COMMIT_FROM

CENT = Decimal("0.01")
_ZERO = Decimal("0")


def _money(value) -> Decimal:
    return Decimal(str(value or 0)).quantize(CENT)


def _month(session: Session, column):
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.strftime("%Y-%m", column)


def _key(session: Session, group_by: str):
    if group_by == "month":
        return _month(session, Opportunity.expected_close_date)
    return {"stage": Opportunity.stage, "owner": Opportunity.owner_id, "team": Opportunity.team_id,
            "region": Opportunity.region}[group_by]


def _rows_sorted(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["key"] is None, r["key"] or "", r.get("currency", "")))


def _scope(principal: Principal):
    return (Opportunity.deleted_at.is_(None), opportunity_visible(principal))


def pipeline(uow: UnitOfWork, principal: Principal, group_by: str) -> dict:
    """Open opportunities: how many, how much, weighted by stage probability, and what they cost so far."""
    session = uow.session
    key = _key(session, group_by).label("key")
    weighted = func.sum(Opportunity.amount * Opportunity.probability / 100)
    stmt = (select(key, Opportunity.currency, func.count(), func.sum(Opportunity.amount), weighted,
                   func.sum(Opportunity.expense_total))
            .where(Opportunity.status == "open", *_scope(principal)).group_by(key, Opportunity.currency))
    rows = [{"key": k, "currency": cur, "count": n, "amount": _money(amount), "weighted": _money(w),
             "expenses": _money(expenses)} for k, cur, n, amount, w, expenses in session.execute(stmt)]
    return {"group_by": group_by, "rows": _rows_sorted(rows)}


def forecast(uow: UnitOfWork, principal: Principal, period: Period, group_by: str) -> dict:
    """closed_won: won in the period; commit / best_case / pipeline: open and expected to close in
    the period, by the probability of their stage (≥80, ≥40, below); weighted: those open ones
    times their probability."""
    session = uow.session
    key = _key(session, group_by).label("key")
    start, end = period.start.date(), period.end.date()
    is_open = (Opportunity.status == "open") & (Opportunity.expected_close_date >= start) \
        & (Opportunity.expected_close_date < end)
    won = (Opportunity.status == "won") & (Opportunity.closed_at >= period.start) & (Opportunity.closed_at < period.end)
    amount, p = Opportunity.amount, Opportunity.probability

    def total(condition, value=amount):
        return func.sum(case((condition, value), else_=_ZERO))

    stmt = (select(key, Opportunity.currency, total(won), total(is_open & (p >= COMMIT_FROM)),
                   total(is_open & (p >= BEST_CASE_FROM) & (p < COMMIT_FROM)), total(is_open & (p < BEST_CASE_FROM)),
                   total(is_open, amount * p / 100))
            .where(is_open | won, *_scope(principal)).group_by(key, Opportunity.currency))
    rows = [{"key": k, "currency": cur, "closed_won": _money(w), "commit": _money(c), "best_case": _money(b),
             "pipeline": _money(pl), "weighted": _money(wt)} for k, cur, w, c, b, pl, wt in session.execute(stmt)]
    return {"period": period.label, "group_by": group_by, "rows": _rows_sorted(rows)}


def _closed_in(period: Period | None):
    if period is None:
        return ()
    return (Opportunity.closed_at >= period.start, Opportunity.closed_at < period.end)


def win_rate(uow: UnitOfWork, principal: Principal, period: Period | None, group_by: str) -> dict:
    session = uow.session
    key = _key(session, group_by).label("key")
    won = func.sum(case((Opportunity.status == "won", 1), else_=0))
    lost = func.sum(case((Opportunity.status == "lost", 1), else_=0))
    stmt = (select(key, won, lost).where(Opportunity.status.in_(("won", "lost")), *_closed_in(period),
                                         *_scope(principal)).group_by(key))
    rows = [{"key": k, "won": int(w), "lost": int(lo), "win_rate": round(w / (w + lo), 4) if w + lo else None}
            for k, w, lo in session.execute(stmt)]
    return {"period": period.label if period else None, "group_by": group_by, "rows": _rows_sorted(rows)}


def sales_cycle(uow: UnitOfWork, principal: Principal, period: Period | None, group_by: str) -> dict:
    """Average days from creation to winning, over deals won (in the period)."""
    session = uow.session
    key = _key(session, group_by).label("key")
    stmt = (select(key, func.count(), func.avg(Opportunity.cycle_days))
            .where(Opportunity.status == "won", *_closed_in(period), *_scope(principal)).group_by(key))
    rows = [{"key": k, "won": n, "average_days": round(float(avg), 2) if avg is not None else None}
            for k, n, avg in session.execute(stmt)]
    return {"period": period.label if period else None, "group_by": group_by, "rows": _rows_sorted(rows)}


def opportunity_funnel(uow: UnitOfWork, principal: Principal, period: Period) -> dict:
    """The deal half of the gateway's funnel: opportunities created in the period, and how many of
    those are won. Marketing sees the counts of all (its funnel report), never a deal or an amount."""
    session = uow.session
    scope = (Opportunity.deleted_at.is_(None),) if principal.role in SEES_EVERYTHING | {"marketing"} \
        else _scope(principal)
    created, won = session.execute(select(func.count(), func.sum(case((Opportunity.status == "won", 1), else_=0)))
                                   .where(Opportunity.created_at >= period.start, Opportunity.created_at < period.end,
                                          *scope)).one()
    return {"period": period.label, "opportunities": created, "won": int(won or 0)}
