"""Commission (issue 16, CONTRACT §4): plans as one document (`GET/PUT /commission-plans`), and a
statement per person and period (`GET /commission`) with every line traced to the order or payment
that earned it. A plan pays tiered rates on counted revenue or on money collected (chosen per plan):
tiers start at an attainment of the period's target, and an accelerator multiplies the rate above
an attainment (100% by default). A plan applies to the people of the teams it names; the plan naming
no team applies to everyone else. A rep reads their own statement; managers their teams' people's
(what was earned in the teams they manage); executives anyone's."""
from __future__ import annotations

import itertools
from decimal import Decimal

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.errors import ValidationFailed

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


def _basis_lines(uow: UnitOfWork, principal: Principal, user_id: str, months: list[str], basis: str) -> list[dict]:
    """What the basis is made of, in the order it was earned: one line per order (its counted lines
    summed) for revenue, one per payment for collections."""
    stmt = select(PerformanceEntry).where(PerformanceEntry.user_id == user_id, PerformanceEntry.metric == basis,
                                          PerformanceEntry.month.in_(months))
    teams = credited_in(principal, "user", user_id)
    if teams is not None:
        stmt = stmt.where(PerformanceEntry.team_id.in_(teams))
    lines: dict[tuple[str, str], dict] = {}
    for e in uow.session.execute(stmt.order_by(PerformanceEntry.occurred_on, PerformanceEntry.source_id)).scalars():
        line = lines.setdefault((e.source, e.source_id), {
            "source": e.source, "source_id": e.source_id, "order_id": e.order_id, "occurred_on": e.occurred_on,
            "amount": Decimal("0.00")})
        line["amount"] += e.amount
    return sorted(lines.values(), key=lambda line: (line["occurred_on"], line["source_id"]))


def statement(uow: UnitOfWork, principal: Principal, user_id: str, period) -> dict:
    check_visible(uow, principal, "user", user_id)
    person = uow.session.get(DirectoryUser, user_id)
    document = plans(uow)
    plan = plan_for(document.document, person.team_id if person else None)
    out = {"user_id": user_id, "period": period.label, "plan": None, "basis": None, "target": None,
           "basis_total": Decimal("0.00"), "attainment": None, "total": Decimal("0.00"), "lines": [],
           "plans_version": document.version}
    if plan is None:
        return out
    basis, months = plan["basis"], scorecard.months_of(period.label)
    target = scorecard.target_in(targets_of(uow, "user", [user_id], scope="|").get((user_id, basis, "|"), []),
                                 period.label)
    earned = Decimal("0.00")
    for line in _basis_lines(uow, principal, user_id, months, basis):
        line["parts"] = scorecard.commission_parts(earned, line["amount"], target, plan["tiers"],
                                                   plan.get("accelerator"))
        line["commission"] = sum((p["commission"] for p in line["parts"]), Decimal("0.00"))
        earned += line["amount"]
        out["lines"].append(line)
    out.update(plan=plan["name"], basis=basis, target=target, basis_total=earned,
               attainment=scorecard.attainment(earned, target),
               total=sum((line["commission"] for line in out["lines"]), Decimal("0.00")))
    return out
