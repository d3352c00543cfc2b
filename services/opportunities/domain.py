"""Rules of accounts and the pipeline: stages and their checklists, who may change what, forecast
categories and account tiers. No I/O."""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from crmkit.auth import Principal
from crmkit.errors import Conflict, Forbidden, ValidationFailed

ACCOUNT_TYPES = ("b2b", "b2c")
TIERS = ("A", "B", "C", "unranked")
STATUSES = ("open", "won", "lost")
EXPENSE_CATEGORIES = ("travel", "entertainment", "sample", "demo", "gift", "other")
MEMBER_ROLES = ("sales", "tech", "service", "presales", "manager", "other")
LEADERS = frozenset({"manager", "executive", "admin"})

# CONTRACT §4 defaults, with the checklist a sales team would expect before moving on from each stage.
DEFAULT_STAGES = [
    {"key": "qualification", "label": "Qualification", "probability": 10, "checklist": [
        {"key": "budget_confirmed", "label": "Budget confirmed", "required": True},
        {"key": "decision_maker_identified", "label": "Decision maker identified", "required": True}]},
    {"key": "needs_analysis", "label": "Needs analysis", "probability": 20, "checklist": [
        {"key": "needs_documented", "label": "Needs documented", "required": True}]},
    {"key": "needs_confirmed", "label": "Needs confirmed", "probability": 40, "checklist": [
        {"key": "solution_agreed", "label": "Solution agreed with the customer", "required": True},
        {"key": "demo_done", "label": "Demo done", "required": False}]},
    {"key": "quote", "label": "Quote", "probability": 60, "checklist": [
        {"key": "quote_sent", "label": "Quote sent", "required": True}]},
    {"key": "negotiation", "label": "Negotiation", "probability": 80, "checklist": [
        {"key": "terms_agreed", "label": "Terms agreed", "required": True}]},
    {"key": "contract", "label": "Contract", "probability": 90, "checklist": [
        {"key": "contract_signed", "label": "Contract signed", "required": False}]},
]

# Forecast categories of open opportunities, by the probability of their stage.
COMMIT_FROM, BEST_CASE_FROM = 80, 40


def validate_stages(stages: list[dict]) -> None:
    keys = [s["key"] for s in stages]
    errors = {}
    if len(set(keys)) != len(keys):
        errors["stages"] = ["stage keys must be unique"]
    probabilities = [s["probability"] for s in stages]
    if probabilities != sorted(probabilities):
        errors.setdefault("stages", []).append("probabilities must not decrease along the pipeline")
    for stage in stages:
        items = [i["key"] for i in stage.get("checklist", [])]
        if len(set(items)) != len(items):
            errors.setdefault("stages", []).append(f"checklist keys of {stage['key']!r} must be unique")
    if errors:
        raise ValidationFailed("the pipeline is not valid", errors=errors)


def stage_of(stages: list[dict], key: str) -> dict | None:
    return next((s for s in stages if s["key"] == key), None)


def _position(stages: list[dict], key: str) -> int:
    return next((i for i, s in enumerate(stages) if s["key"] == key), -1)


def done_key(stage: str, item: str) -> str:
    return f"{stage}:{item}"


def checklist_view(stages: list[dict], stage: str, done: dict) -> list[dict]:
    current = stage_of(stages, stage) or {"checklist": []}
    return [{"key": i["key"], "label": i["label"], "required": i.get("required", False),
             "done": bool(done.get(done_key(stage, i["key"])))} for i in current.get("checklist", [])]


def missing_items(stages: list[dict], current: str, target: str, done: dict) -> list[dict]:
    """Required checklist items that stand between `current` and `target`: those of the current stage
    and of every stage skipped on the way (skipping stages must not skip their checks). Moving back
    needs nothing."""
    start, end = _position(stages, current), _position(stages, target)
    if start < 0 or end <= start:
        return []
    return [{"stage": s["key"], "key": i["key"], "label": i["label"]}
            for s in stages[start:end] for i in s.get("checklist", [])
            if i.get("required") and not done.get(done_key(s["key"], i["key"]))]


def check_stage_move(stages: list[dict], status: str, current: str, target: str, done: dict) -> None:
    if status != "open":
        raise Conflict(f"the opportunity is {status}; re-open it before moving it", errors={"status": [status]})
    if stage_of(stages, target) is None:
        raise ValidationFailed(f"no stage {target!r} in the pipeline",
                               errors={"stage": [f"one of {[s['key'] for s in stages]}"]})
    missing = missing_items(stages, current, target, done)
    if missing:
        names = ", ".join(f"{m['stage']}/{m['key']}" for m in missing)
        raise Conflict(f"required checklist items are not done: {names}",
                       errors={"checklist": [f"{m['stage']}/{m['key']}: {m['label']}" for m in missing]})


def check_open(status: str) -> None:
    if status != "open":
        raise Conflict(f"the opportunity is already {status}", errors={"status": [status]})


def forecast_category(status: str, probability: int) -> str:
    if status == "won":
        return "closed_won"
    if status == "lost":
        return "omitted"
    if probability >= COMMIT_FROM:
        return "commit"
    return "best_case" if probability >= BEST_CASE_FROM else "pipeline"


def tiers_by_revenue(revenue: dict[str, Decimal], a_share: Decimal = Decimal("0.80"),
                     b_share: Decimal = Decimal("0.95")) -> dict[str, str]:
    """A: the accounts that make the top 80% of revenue (the one that crosses 80% included), B: the
    next 15%, C: the rest with revenue. Accounts without revenue in the window are 'unranked'.
    Ties are broken by id, so the answer never depends on the order rows came in."""
    ranked = sorted(((amount, account) for account, amount in revenue.items() if amount > 0),
                    key=lambda pair: (-pair[0], pair[1]))
    total = sum(amount for amount, _ in ranked)
    tiers, before = {}, Decimal(0)
    for amount, account in ranked:
        share_before = before / total
        tiers[account] = "A" if share_before < a_share else "B" if share_before < b_share else "C"
        before += amount
    for account in revenue:
        tiers.setdefault(account, "unranked")
    return tiers


# ---- who may change what ---------------------------------------------------------------------------
def may_write(principal: Principal, owner_id: str | None, team_id: str | None) -> bool:
    """Visible is not writable: a virtual-team member (tech, after-sales, another rep helping) reads
    and logs activities; the owner, their managers, executives and admins change the record."""
    if principal.role in ("executive", "admin"):
        return True
    if principal.role == "manager" and (owner_id == principal.user_id or team_id in principal.manages):
        return True
    return principal.role == "rep" and owner_id == principal.user_id


def check_may_write(principal: Principal, owner_id: str | None, team_id: str | None) -> None:
    if not may_write(principal, owner_id, team_id):
        raise Forbidden("you may read this record and log activities on it, not change it")


def check_may_set_owner(principal: Principal) -> None:
    if principal.role not in LEADERS:
        raise Forbidden("only managers, executives and admins give a record to someone else")


def unique_members(members: Iterable[dict]) -> list[dict]:
    seen, out = set(), []
    for m in members:
        if m["user_id"] in seen:
            raise ValidationFailed("a user is listed twice", errors={"members": [f"{m['user_id']} appears twice"]})
        seen.add(m["user_id"])
        out.append(m)
    return out
