"""Commission (issue 16, CONTRACT §4): plans as one document (`GET/PUT /commission-plans`), and a
statement per person and period (`GET /commission`) with every line traced to the order or payment
that earned it. A plan pays tiered rates on counted revenue or on money collected (chosen per plan):
tiers start at an attainment of the period's target, and an accelerator multiplies the rate above
an attainment (100% by default). A plan applies to what was earned in the teams it names (credit
keeps the team it was earned in); the plan naming no team to everything else. A rep reads their own
statement; managers their teams' people's (what was earned in the teams they manage); executives
anyone's."""
from __future__ import annotations

import itertools
from decimal import Decimal

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.errors import NotFound, ValidationFailed
from crmkit.visibility import SEES_EVERYTHING

from . import documents, scorecard
from .db import DirectoryUser
from .performance import check_visible, credited_in, targets_of
from .performance_db import PerformanceDocument, PerformanceEntry

PLANS = "commission"
DEFAULT_PLANS = {"plans": [{"name": "standard", "basis": "revenue", "teams": [],
                            "tiers": [{"from_pct": "0", "rate_pct": "2"}, {"from_pct": "50", "rate_pct": "3"}],
                            "accelerator": {"above_pct": "100", "multiplier": "1.5"}}]}
BASES = ("revenue", "collections")


def plans(uow: UnitOfWork) -> PerformanceDocument:
    return documents.read(uow, PLANS, DEFAULT_PLANS)


def _check(document: dict) -> None:
    """The rules a schema cannot state: names once, a team in one plan, one default plan, tiers
    starting at 0 and rising."""
    errors: dict[str, list[str]] = {}
    names = [p["name"] for p in document["plans"]]
    if len(set(names)) != len(names):
        errors.setdefault("plans", []).append("a plan name is used twice")
    teams = [t for p in document["plans"] for t in p["teams"]]
    if len(set(teams)) != len(teams):
        errors.setdefault("plans", []).append("a team is in two plans")
    if sum(1 for p in document["plans"] if not p["teams"]) > 1:
        errors.setdefault("plans", []).append("at most one plan names no team (the default)")
    for plan in document["plans"]:
        starts = [Decimal(t["from_pct"]) for t in plan["tiers"]]
        if not starts or starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)):
            errors.setdefault("plans", []).append(f"{plan['name']}: tiers start at 0 and rise")
    if errors:
        raise ValidationFailed("the commission plans do not hold together", errors=errors)


def put_plans(uow: UnitOfWork, principal: Principal, document: dict, check_version) -> PerformanceDocument:
    _check(document)
    return documents.write(uow, principal, PLANS, DEFAULT_PLANS, document, check_version)


def plan_for(document: dict, team_id: str | None) -> dict | None:
    for plan in document["plans"]:
        if team_id in plan["teams"]:
            return plan
    return next((p for p in document["plans"] if not p["teams"]), None)


def _lines(uow: UnitOfWork, principal: Principal, user_id: str, months: list[str], document: dict
           ) -> dict[str, list[dict]]:
    """What each plan pays on, in the order it was earned: per plan (the plan of the team a line was
    credited in, so a rep who changed teams keeps the plan of the team they earned in), one line
    per order (its counted lines summed) on revenue, one per payment on collections."""
    stmt = select(PerformanceEntry).where(PerformanceEntry.user_id == user_id, PerformanceEntry.month.in_(months),
                                          PerformanceEntry.metric.in_(BASES))
    teams = credited_in(principal, "user", user_id)
    if teams is not None:
        stmt = stmt.where(PerformanceEntry.team_id.in_(teams))
    lines: dict[tuple[str, str, str], dict] = {}
    for e in uow.session.execute(stmt.order_by(PerformanceEntry.occurred_on, PerformanceEntry.source_id)).scalars():
        plan = plan_for(document, e.team_id or None)
        if plan is None or plan["basis"] != e.metric:
            continue
        line = lines.setdefault((plan["name"], e.source, e.source_id), {
            "plan": plan["name"], "source": e.source, "source_id": e.source_id, "order_id": e.order_id,
            "occurred_on": e.occurred_on, "amount": Decimal("0.00")})
        line["amount"] += e.amount
    by_plan: dict[str, list[dict]] = {}
    for line in sorted(lines.values(), key=lambda line: (line["occurred_on"], line["source_id"])):
        by_plan.setdefault(line["plan"], []).append(line)
    return by_plan


def _summary(plan: dict, target: Decimal | None, lines: list[dict]) -> dict:
    earned = Decimal("0.00")
    for line in lines:
        line["parts"] = scorecard.commission_parts(earned, line["amount"], target, plan["tiers"],
                                                   plan.get("accelerator"))
        line["commission"] = sum((p["commission"] for p in line["parts"]), Decimal("0.00"))
        earned += line["amount"]
    return {"plan": plan["name"], "basis": plan["basis"], "target": target, "basis_total": earned,
            "attainment": scorecard.attainment(earned, target),
            "total": sum((line["commission"] for line in lines), Decimal("0.00"))}


def statement(uow: UnitOfWork, principal: Principal, user_id: str, period) -> dict:
    """The statement: each plan's lines (tiers climbing with that plan's basis against the rep's
    target on it), the plan of the rep's team now summed at the top, and every plan paid in the
    period under `plans`. A manager sees the lines earned in the teams they manage, tiered among
    themselves: what was earned elsewhere contributes nothing they can see."""
    check_visible(uow, principal, "user", user_id)
    person = uow.session.get(DirectoryUser, user_id)
    if person is None and principal.role in SEES_EVERYTHING:
        raise NotFound(f"no user {user_id}")
    document = plans(uow)
    months = scorecard.months_of(period.label)
    targets = targets_of(uow, "user", [user_id], scope="|", year=period.label[:4])
    by_plan = _lines(uow, principal, user_id, months, document.document)
    summaries, lines = [], []
    for plan in document.document["plans"]:
        if plan["name"] in by_plan:
            target = scorecard.target_in(targets.get((user_id, plan["basis"], "|"), []), period.label)
            summaries.append(_summary(plan, target, by_plan[plan["name"]]))
            lines += by_plan[plan["name"]]
    current = plan_for(document.document, person.team_id if person else None)
    top = next((s for s in summaries if current and s["plan"] == current["name"]), None)
    if top is None and current is not None:
        target = scorecard.target_in(targets.get((user_id, current["basis"], "|"), []), period.label)
        top = _summary(current, target, [])
    top = top or {"plan": None, "basis": None, "target": None, "basis_total": Decimal("0.00"), "attainment": None}
    return {"user_id": user_id, "period": period.label, "plans_version": document.version,
            **{k: top[k] for k in ("plan", "basis", "target", "basis_total", "attainment")},
            "total": sum((s["total"] for s in summaries), Decimal("0.00")), "plans": summaries,
            "lines": sorted(lines, key=lambda line: (line["occurred_on"], line["source_id"]))}
