"""Lead scoring rules (no I/O): each matching rule adds its points; the score is clamped to 0-100
and explains itself in `score_reasons`."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

OPS = ("eq", "in", "gte", "lte", "present")
# Fields a rule may look at: the lead's own, plus `activities` (how many were logged).
SCORABLE_FIELDS = ("source", "industry", "region", "campaign", "interest", "email", "phone", "company",
                   "contact_name", "estimated_value", "quoted_price", "touches", "activities", "status")

# Fields some roles may not read (CONTRACT §2: marketing sees no money). A score built from them would
# tell those roles what the fields hide, so their points are kept apart (`public_score`), and those
# roles may not write rules on them.
MONEY_FIELDS = frozenset({"estimated_value", "quoted_price"})

DEFAULT_RULES = [
    {"name": "reachable by email", "field": "email", "op": "present", "value": None, "points": 10},
    {"name": "reachable by phone", "field": "phone", "op": "present", "value": None, "points": 10},
    {"name": "warm source", "field": "source", "op": "in", "value": ["referral", "event"], "points": 20},
    {"name": "stated interest", "field": "interest", "op": "present", "value": None, "points": 10},
    {"name": "sizeable deal", "field": "estimated_value", "op": "gte", "value": 20000, "points": 10},
    {"name": "large deal", "field": "estimated_value", "op": "gte", "value": 100000, "points": 15},
    {"name": "came back", "field": "touches", "op": "gte", "value": 2, "points": 10},
    {"name": "engaged", "field": "activities", "op": "gte", "value": 1, "points": 15},
]


def _number(value):
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None  # "NaN" in a lead's field compares as nothing


def _matches(rule: dict, value) -> bool:
    op, expected = rule["op"], rule.get("value")
    if op == "present":
        return value not in (None, "", [])
    if value is None:
        return False
    if op == "eq":
        return str(value).casefold() == str(expected).casefold()
    if op == "in":
        return str(value).casefold() in {str(v).casefold() for v in expected or []}
    left, right = _number(value), _number(expected)
    if left is None or right is None:
        return False
    return left >= right if op == "gte" else left <= right


def score(facts: dict, rules: list[dict]) -> tuple[int, list[dict]]:
    reasons = [{"rule": r["name"], "points": r["points"], "field": r["field"]}
               for r in rules if _matches(r, facts.get(r["field"]))]
    return _clamp(reasons), reasons


def public_reasons(reasons: list[dict]) -> list[dict]:
    """The reasons that say nothing about money fields. A reason stored before reasons named their
    field is kept out too: what it looked at is unknown."""
    return [r for r in reasons if r.get("field") is not None and r["field"] not in MONEY_FIELDS]


def public_score(reasons: list[dict]) -> int:
    return _clamp(public_reasons(reasons))


def _clamp(reasons: list[dict]) -> int:
    return max(0, min(100, sum(r["points"] for r in reasons)))
