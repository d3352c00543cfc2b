"""Reports for the general manager (issue 16), from the sums performance keeps (actuals), so each is a
few grouped reads at any size: sales by product category or region, month by month, beside the same
month a year earlier; target attainment by team and by rep; collections beside revenue. A manager's
reports cover what was earned in the teams they manage; executives' and admins' the company's."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.errors import NotFound
from crmkit.teams import descendants
from crmkit.visibility import SEES_EVERYTHING

from . import scorecard
from .db import DirectoryUser
from .performance import targets_of, team_tree
from .performance_db import Actual


def _scope(principal: Principal, stmt):
    if principal.role in SEES_EVERYTHING:
        return stmt
    return stmt.where(Actual.team_id.in_(list(principal.manages)))


def _year_before(month: str) -> str:
    return f"{int(month[:4]) - 1}{month[4:]}"


def _change(now: Decimal, before: Decimal) -> Decimal | None:
    return None if not before else ((now - before) * scorecard.HUNDRED / before).quantize(Decimal("0.1"))


def sales(uow: UnitOfWork, principal: Principal, period, group_by: str) -> dict:
    """Counted revenue and gross margin per month and product category (or region), with the same
    month a year earlier and the change in percent."""
    months = scorecard.months_of(period.label)
    column = Actual.product_category if group_by == "category" else Actual.region
    stmt = _scope(principal, select(Actual.month, column, Actual.metric, func.sum(Actual.amount)).where(
        Actual.metric.in_(["revenue", "gross_margin"]), Actual.month.in_(months + [_year_before(m) for m in months])))
    sums: dict[tuple, Decimal] = {}
    for month, key, metric, amount in uow.session.execute(stmt.group_by(Actual.month, column, Actual.metric)):
        sums[(month, key, metric)] = amount
    keys = sorted({k for (_, k, _) in sums})
    rows = []
    for month in months:
        for key in keys:
            revenue = sums.get((month, key, "revenue"), Decimal("0.00"))
            before = sums.get((_year_before(month), key, "revenue"), Decimal("0.00"))
            margin = sums.get((month, key, "gross_margin"), Decimal("0.00"))
            if revenue or before or margin:
                rows.append({"month": month, "group": key or None, "revenue": revenue, "gross_margin": margin,
                             "revenue_year_before": before, "change_pct": _change(revenue, before)})
    return {"period": period.label, "group_by": group_by, "items": rows}


def collections(uow: UnitOfWork, principal: Principal, period) -> dict:
    """Money collected beside counted revenue, month by month (collected over revenue in percent)."""
    months = scorecard.months_of(period.label)
    stmt = _scope(principal, select(Actual.month, Actual.metric, func.sum(Actual.amount)).where(
        Actual.metric.in_(["revenue", "collections"]), Actual.month.in_(months)))
    sums = {(m, metric): a for m, metric, a in uow.session.execute(stmt.group_by(Actual.month, Actual.metric))}
    rows = []
    for month in months:
        revenue = sums.get((month, "revenue"), Decimal("0.00"))
        collected = sums.get((month, "collections"), Decimal("0.00"))
        rows.append({"month": month, "revenue": revenue, "collections": collected,
                     "collected_pct": scorecard.attainment(collected, revenue)})
    return {"period": period.label, "items": rows}


def attainment(uow: UnitOfWork, principal: Principal, period, metric: str, team_id: str | None) -> dict:
    """Per team (the one asked for and those under it, or all the caller's), its target, actual (what
    was earned in it and the teams under it) and attainment on the metric, and the same for each of
    its people. A team the caller does not manage answers 404, whether or not it exists."""
    tree = team_tree(uow)
    sees_all = principal.role in SEES_EVERYTHING
    if team_id is not None and not sees_all and team_id not in principal.manages:
        raise NotFound(f"no team {team_id} of yours")
    teams = sorted(descendants([team_id], tree)) if team_id is not None else sorted(t.id for t in tree)
    if not sees_all:
        teams = [t for t in teams if t in principal.manages]
    if team_id is not None and not teams:
        raise NotFound(f"no team {team_id} of yours")
    months = scorecard.months_of(period.label)
    by_user = {(u, t): a for u, t, a in uow.session.execute(
        select(Actual.user_id, Actual.team_id, func.sum(Actual.amount)).where(
            Actual.metric == metric, Actual.month.in_(months), Actual.team_id.in_(teams))
        .group_by(Actual.user_id, Actual.team_id))}
    members = {t: set() for t in teams}
    for user, team in uow.session.execute(select(DirectoryUser.id, DirectoryUser.team_id).where(
            DirectoryUser.team_id.in_(teams), DirectoryUser.active.is_(True))):
        members[team].add(user)
    people = {t: set(ps) for t, ps in members.items()}
    for user, team in by_user:  # people who earned in the team and have left it are on its list too
        people[team].add(user)
    team_targets = targets_of(uow, "team", teams, scope="|", year=period.label[:4])
    user_targets = targets_of(uow, "user", sorted({u for ps in members.values() for u in ps} if not sees_all
                                                  else {u for ps in people.values() for u in ps}), scope="|",
                              year=period.label[:4])
    items = []
    for team in teams:
        rows = []
        for user in sorted(people[team]):
            actual = by_user.get((user, team), Decimal("0.00"))
            # A leaver's target is their new manager's business: shown only to who sees everything.
            target = scorecard.target_in(user_targets.get((user, metric, "|"), []), period.label) \
                if sees_all or user in members[team] else None
            rows.append({"user_id": user, "target": target, "actual": actual,
                         "attainment": scorecard.attainment(actual, target)})
        below = descendants([team], tree) & set(teams)
        actual = sum((a for (_, t), a in by_user.items() if t in below), Decimal("0.00"))
        target = scorecard.target_in(team_targets.get((team, metric, "|"), []), period.label)
        items.append({"team_id": team, "target": target, "actual": actual,
                      "attainment": scorecard.attainment(actual, target), "people": rows})
    return {"period": period.label, "metric": metric, "items": items}
