"""Performance (issue 16): per metric the target for a period, the actual (from the sums the event
consumers keep, actuals.py) and the attainment, with the weighted KPI score; and the contributions
that make up a figure. A user's figures are seen by that user, the managers of their team and
executives; a team's by its managers and executives. Anything else answers 404."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from sqlalchemy import func, or_, select, true

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.errors import NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate
from crmkit.teams import TeamNode, descendants
from crmkit.visibility import SEES_EVERYTHING

from . import documents, scorecard
from .db import DirectoryTeam, DirectoryUser
from .domain import COST_HIDDEN_FROM
from .performance_db import Actual, PerformanceDocument, PerformanceEntry, Target

SCHEME = "kpi"
DEFAULT_SCHEME = {"metrics": [{"metric": "revenue", "weight": 50, "cap_pct": 120},
                              {"metric": "new_accounts", "weight": 20, "cap_pct": 120},
                              {"metric": "activities", "weight": 15, "cap_pct": 120},
                              {"metric": "collections", "weight": 15, "cap_pct": 120}]}


def scheme(uow: UnitOfWork) -> PerformanceDocument:
    return documents.read(uow, SCHEME, DEFAULT_SCHEME)


def put_scheme(uow: UnitOfWork, principal: Principal, document: dict, check_version) -> PerformanceDocument:
    metrics = [m["metric"] for m in document["metrics"]]
    if len(set(metrics)) != len(metrics):
        raise ValidationFailed("each metric once", errors={"metrics": ["a metric is listed twice"]})
    total = sum(m["weight"] for m in document["metrics"])
    if total != 100:
        raise ValidationFailed("the weights total 100", errors={"metrics": [f"they total {total}"]})
    return documents.write(uow, principal, SCHEME, DEFAULT_SCHEME, document, check_version)


def team_tree(uow: UnitOfWork) -> list[TeamNode]:
    """The replica's teams, for crmkit.teams.descendants (a cycle in the replica cannot loop it)."""
    return [TeamNode(t.id, t.manager_id, t.parent_team_id) for t in uow.session.execute(select(DirectoryTeam)).scalars()]


def teams_under(uow: UnitOfWork, team_id: str) -> list[str]:
    """The team and every team below it (a director's target covers the teams they lead)."""
    return sorted(descendants([team_id], team_tree(uow)))


def credited_in(principal: Principal, subject_type: str, subject_id: str) -> list[str] | None:
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


def targets_of(uow: UnitOfWork, subject_type: str, subject_ids: list[str], *, scope: str | None = None,
               year: str | None = None) -> dict[tuple[str, str, str], list]:
    """The subjects' targets in one query, by (subject, metric, scope): rows of the columns the
    figures need (a team's ranking reads hundreds; ORM objects would cost more than the query).
    `year`: only targets of that year's periods (the only ones a period of it can use)."""
    stmt = select(Target.subject_id, Target.metric, Target.scope, Target.period, Target.value, Target.distribution,
                  Target.product_category, Target.region).where(
        Target.subject_type == subject_type, Target.subject_id.in_(subject_ids))
    if scope is not None:
        stmt = stmt.where(Target.scope == scope)
    if year is not None:
        stmt = stmt.where(Target.period.like(f"{year}%"))
    out: dict[tuple[str, str, str], list] = defaultdict(list)
    for t in uow.session.execute(stmt.order_by(Target.period)):
        out[(t.subject_id, t.metric, t.scope)].append(t)
    return out


def _figure(value: Decimal, target: Decimal | None) -> dict:
    return {"target": target, "actual": value, "attainment": scorecard.attainment(value, target)}


def _who(subject_type: str, subject_id: str, uow: UnitOfWork):
    return Actual.user_id == subject_id if subject_type == "user" else \
        Actual.team_id.in_(teams_under(uow, subject_id))


def performance(uow: UnitOfWork, principal: Principal, subject_type: str, subject_id: str, period) -> dict:
    check_visible(uow, principal, subject_type, subject_id)
    months = scorecard.months_of(period.label)
    teams = credited_in(principal, subject_type, subject_id)
    stmt = select(Actual.metric, Actual.product_category, Actual.region, func.sum(Actual.amount)).where(
        _who(subject_type, subject_id, uow), Actual.month.in_(months))
    if teams is not None:
        stmt = stmt.where(Actual.team_id.in_(teams))
    rows = uow.session.execute(stmt.group_by(Actual.metric, Actual.product_category, Actual.region)).all()
    targets = targets_of(uow, subject_type, [subject_id], year=period.label[:4])

    def actual(metric: str, category: str | None = None, region: str | None = None) -> Decimal:
        return sum((amount for m, c, r, amount in rows if m == metric and category in (None, c)
                    and region in (None, r)), Decimal(0))

    figures = {metric: _figure(actual(metric), scorecard.target_in(targets.get((subject_id, metric, "|"), []),
                                                                   period.label))
               for metric in scorecard.METRICS}
    narrowed = []
    for (_, metric, scope), rows_of_scope in sorted(targets.items(), key=lambda kv: kv[0][1:]):
        target = scorecard.target_in(rows_of_scope, period.label) if scope != "|" else None
        if target is None:
            continue
        category, region = rows_of_scope[0].product_category, rows_of_scope[0].region
        narrowed.append({"metric": metric, "scope": scope, "product_category": category, "region": region,
                         **_figure(actual(metric, category, region), target)})
    kpi = scheme(uow)
    score = scorecard.weighted_score(kpi.document["metrics"], {m: f["attainment"] for m, f in figures.items()})
    if principal.role in COST_HIDDEN_FROM:  # margin is cost's shadow: not for reps (CONTRACT §2)
        figures.pop("gross_margin")
        narrowed = [n for n in narrowed if n["metric"] != "gross_margin"]
    return {"subject_type": subject_type, "subject_id": subject_id, "period": period.label, "metrics": figures,
            "narrowed": narrowed, "kpi": {"score": score, "scheme_version": kpi.version,
                                          "metrics": kpi.document["metrics"]}}


def ranking(uow: UnitOfWork, principal: Principal, team_id: str, period) -> dict:
    """A team's reps (of the team and the teams under it) ranked by KPI score, then revenue: a
    manager sees the people of the teams they manage, with what they earned in those teams; a rep
    only themselves (a ranking shows no one else's figures to a rep); executives everyone. A team
    the caller has no one visible in answers 404."""
    if principal.role not in SEES_EVERYTHING and team_id not in principal.manages:
        me = uow.session.get(DirectoryUser, principal.user_id)
        if me is None or me.team_id != team_id:  # one answer for a team not yours and one that does not exist
            raise NotFound(f"no ranking of team {team_id} for you")
    under = teams_under(uow, team_id)
    people = select(DirectoryUser.id).where(DirectoryUser.team_id.in_(under), DirectoryUser.active.is_(True),
                                            DirectoryUser.role == "rep")
    if principal.role not in SEES_EVERYTHING:
        if principal.role == "manager":
            people = people.where(or_(DirectoryUser.team_id.in_(principal.manages),
                                      DirectoryUser.id == principal.user_id))
        else:
            people = people.where(DirectoryUser.id == principal.user_id)
    members = sorted(uow.session.execute(people).scalars())
    if not members:
        raise NotFound(f"no ranking of team {team_id} for you")
    months = scorecard.months_of(period.label)
    stmt = select(Actual.user_id, Actual.metric, func.sum(Actual.amount)).where(
        Actual.user_id.in_(members), Actual.month.in_(months))
    if principal.role not in SEES_EVERYTHING:
        stmt = stmt.where(Actual.team_id.in_([*principal.manages]) if principal.role == "manager" else true())
    sums = {(u, m): a for u, m, a in uow.session.execute(stmt.group_by(Actual.user_id, Actual.metric)).all()}
    targets = targets_of(uow, "user", members, scope="|", year=period.label[:4])
    kpi = scheme(uow)
    entries = []
    for user in members:
        figures = {metric: _figure(sums.get((user, metric), Decimal(0)),
                                   scorecard.target_in(targets.get((user, metric, "|"), []), period.label))
                   for metric in scorecard.METRICS}
        score = scorecard.weighted_score(kpi.document["metrics"], {m: f["attainment"] for m, f in figures.items()})
        if principal.role in COST_HIDDEN_FROM:
            figures.pop("gross_margin")
        entries.append({"user_id": user, "score": score, "metrics": figures})
    entries.sort(key=lambda e: (-e["score"], -e["metrics"]["revenue"]["actual"], e["user_id"]))
    for i, e in enumerate(entries):  # equal scores and revenue share a rank (1, 2, 2, 4)
        same = i and (e["score"], e["metrics"]["revenue"]["actual"]) == (
            entries[i - 1]["score"], entries[i - 1]["metrics"]["revenue"]["actual"])
        e["rank"] = entries[i - 1]["rank"] if same else i + 1
    return {"team_id": team_id, "period": period.label, "scheme_version": kpi.version, "items": entries}


def contributions(uow: UnitOfWork, principal: Principal, args: dict):
    """What makes up a figure: every entry of the ledger for the subject, period and metric."""
    subject_type, subject_id = args["subject_type"], args["subject_id"]
    check_visible(uow, principal, subject_type, subject_id)
    who = PerformanceEntry.user_id == subject_id if subject_type == "user" else \
        PerformanceEntry.team_id.in_(teams_under(uow, subject_id))
    stmt = select(PerformanceEntry).where(who, PerformanceEntry.month.in_(scorecard.months_of(args["period"].label)))
    teams = credited_in(principal, subject_type, subject_id)
    if teams is not None:
        stmt = stmt.where(PerformanceEntry.team_id.in_(teams))
    if args.get("metric"):
        stmt = stmt.where(PerformanceEntry.metric == args["metric"])
    if principal.role in COST_HIDDEN_FROM:
        stmt = stmt.where(PerformanceEntry.metric != "gross_margin")
    return paginate(uow.session, stmt, model=PerformanceEntry, sort=SortSpec("occurred_on", descending=False),
                    limit=args["limit"], cursor=args.get("cursor"))
