"""Performance (issue 16): per metric the target for a period, the actual (from the sums the event
consumers keep, actuals.py) and the attainment, with the weighted KPI score; and the contributions
that make up a figure. A user's figures are seen by that user, the managers of their team and
executives; a team's by its managers and executives. Anything else answers 404."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.teams import TeamNode, descendants
from crmkit.visibility import SEES_EVERYTHING

from . import scorecard
from .db import DirectoryTeam, DirectoryUser
from .performance_db import Actual, KpiScheme, PerformanceEntry, Target

SCHEME = "kpi"
DEFAULT_SCHEME = {"metrics": [{"metric": "revenue", "weight": 50, "cap_pct": 120},
                              {"metric": "new_accounts", "weight": 20, "cap_pct": 120},
                              {"metric": "activities", "weight": 15, "cap_pct": 120},
                              {"metric": "collections", "weight": 15, "cap_pct": 120}]}


def scheme(uow: UnitOfWork, *, for_update: bool = False) -> KpiScheme:
    row = uow.session.get(KpiScheme, SCHEME, with_for_update=for_update)
    return row or KpiScheme(name=SCHEME, document=DEFAULT_SCHEME, version=0, updated_at=utcnow())


def put_scheme(uow: UnitOfWork, principal: Principal, document: dict, check_version) -> KpiScheme:
    metrics = [m["metric"] for m in document["metrics"]]
    if len(set(metrics)) != len(metrics):
        raise ValidationFailed("each metric once", errors={"metrics": ["a metric is listed twice"]})
    total = sum(m["weight"] for m in document["metrics"])
    if total != 100:
        raise ValidationFailed("the weights total 100", errors={"metrics": [f"they total {total}"]})
    row = scheme(uow, for_update=True)
    check_version(row.version)
    if row.version == 0:
        uow.session.add(row)
        row.version = 1
    row.document, row.updated_by, row.updated_at = document, principal.user_id, utcnow()
    uow.session.flush()
    return row


def _teams_under(uow: UnitOfWork, team_id: str) -> list[str]:
    """The team and every team below it (a director's target covers the teams they lead); a cycle
    in the replica cannot loop."""
    teams = [TeamNode(t.id, t.manager_id, t.parent_team_id)
             for t in uow.session.execute(select(DirectoryTeam)).scalars()]
    return sorted(descendants([team_id], teams))


def _credited_in(principal: Principal, subject_type: str, subject_id: str) -> list[str] | None:
    """The teams whose credit the caller may see in a user's figures: a manager looking at one of
    their people sees what was earned in the teams they manage, not in the person's former team."""
    if principal.role in SEES_EVERYTHING or subject_type != "user" or subject_id == principal.user_id:
        return None
    return list(principal.manages)


def check_visible(uow: UnitOfWork, principal: Principal, subject_type: str, subject_id: str) -> None:
    if principal.role in SEES_EVERYTHING:
        return
    if subject_type == "user":
        if subject_id == principal.user_id and principal.role in ("rep", "manager"):
            return
        user = uow.session.get(DirectoryUser, subject_id)
        if principal.role == "manager" and user is not None and user.team_id in principal.manages:
            return
    elif principal.role == "manager" and subject_id in principal.manages:
        return
    raise NotFound(f"no performance of {subject_type} {subject_id} for you")  # as if it did not exist


def _target(uow: UnitOfWork, subject_type: str, subject_id: str, metric: str, scope: str, period: str
            ) -> Decimal | None:
    """The target for `period`: one set for it exactly, else the share of one set for a period
    containing it, else the sum of monthly targets inside it."""
    rows = uow.session.execute(select(Target).where(
        Target.subject_type == subject_type, Target.subject_id == subject_id, Target.metric == metric,
        Target.scope == scope).order_by(Target.period)).scalars().all()
    wanted = scorecard.months_of(period)
    exact = [t for t in rows if t.period == period]
    if exact:
        return exact[0].value
    # The narrowest target containing the period (a quarter's before the year's), shared by month.
    for t in sorted(rows, key=lambda t: len(scorecard.months_of(t.period))):
        share = scorecard.target_for(t.value, t.period, scorecard.check_distribution(
            t.period, {m: Decimal(v) for m, v in (t.distribution or {}).items()} or None), period)
        if share is not None:
            return share
    # Else the targets inside it, quarters first, then months no quarter covers.
    inside = [t for t in rows if set(scorecard.months_of(t.period)) <= set(wanted)]
    covered: set[str] = set()
    total, found = Decimal("0.00"), False
    for t in sorted(inside, key=lambda t: -len(scorecard.months_of(t.period))):
        months = set(scorecard.months_of(t.period))
        if months & covered:
            continue
        covered |= months
        total, found = total + t.value, True
    return total if found else None


def _actuals(uow: UnitOfWork, subject_type: str, subject_id: str, months: list[str], category: str | None = None,
             region: str | None = None, teams: list[str] | None = None) -> dict[str, Decimal]:
    who = Actual.user_id == subject_id if subject_type == "user" else \
        Actual.team_id.in_(_teams_under(uow, subject_id))
    stmt = select(Actual.metric, func.sum(Actual.amount)).where(who, Actual.month.in_(months))
    if teams is not None:
        stmt = stmt.where(Actual.team_id.in_(teams))
    if category is not None:
        stmt = stmt.where(Actual.product_category == category)
    if region is not None:
        stmt = stmt.where(Actual.region == region)
    return {metric: amount for metric, amount in uow.session.execute(stmt.group_by(Actual.metric)).all()}  # noqa: C416


def performance(uow: UnitOfWork, principal: Principal, subject_type: str, subject_id: str, period) -> dict:
    check_visible(uow, principal, subject_type, subject_id)
    months = scorecard.months_of(period.label)
    teams = _credited_in(principal, subject_type, subject_id)
    actual = _actuals(uow, subject_type, subject_id, months, teams=teams)
    figures = {}
    for metric in scorecard.METRICS:
        target = _target(uow, subject_type, subject_id, metric, "|", period.label)
        value = actual.get(metric, Decimal(0))
        figures[metric] = {"target": target, "actual": value, "attainment": scorecard.attainment(value, target)}
    narrowed = []
    for t in uow.session.execute(select(Target).where(
            Target.subject_type == subject_type, Target.subject_id == subject_id, Target.scope != "|")
            .order_by(Target.metric, Target.scope)).scalars():
        target = _target(uow, subject_type, subject_id, t.metric, t.scope, period.label)
        if target is None or any(n["metric"] == t.metric and n["scope"] == t.scope for n in narrowed):
            continue
        value = _actuals(uow, subject_type, subject_id, months, t.product_category, t.region,
                         teams).get(t.metric, Decimal(0))
        narrowed.append({"metric": t.metric, "scope": t.scope, "product_category": t.product_category,
                         "region": t.region, "target": target, "actual": value,
                         "attainment": scorecard.attainment(value, target)})
    kpi = scheme(uow)
    score = scorecard.weighted_score(kpi.document["metrics"], {m: f["attainment"] for m, f in figures.items()})
    return {"subject_type": subject_type, "subject_id": subject_id, "period": period.label, "metrics": figures,
            "narrowed": narrowed, "kpi": {"score": score, "scheme_version": kpi.version,
                                          "metrics": kpi.document["metrics"]}}


def contributions(uow: UnitOfWork, principal: Principal, args: dict):
    """What makes up a figure: every entry of the ledger for the subject, period and metric."""
    subject_type, subject_id = args["subject_type"], args["subject_id"]
    check_visible(uow, principal, subject_type, subject_id)
    who = PerformanceEntry.user_id == subject_id if subject_type == "user" else \
        PerformanceEntry.team_id.in_(_teams_under(uow, subject_id))
    stmt = select(PerformanceEntry).where(who, PerformanceEntry.month.in_(scorecard.months_of(args["period"].label)))
    teams = _credited_in(principal, subject_type, subject_id)
    if teams is not None:
        stmt = stmt.where(PerformanceEntry.team_id.in_(teams))
    if args.get("metric"):
        stmt = stmt.where(PerformanceEntry.metric == args["metric"])
    return paginate(uow.session, stmt, model=PerformanceEntry, sort=SortSpec("occurred_on", descending=False),
                    limit=args["limit"], cursor=args.get("cursor"))
