"""Lead assignment rules (no I/O): the first rule whose match fits picks a team or a user; inside
a team, `round_robin` or `least_loaded` picks among the team's active reps."""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("round_robin", "least_loaded")


@dataclass(frozen=True)
class Target:
    rule: str | None
    team_id: str | None
    user_id: str | None = None
    strategy: str = "round_robin"


UNASSIGNED = Target(rule=None, team_id=None)


def rule_matches(match: dict, lead: dict) -> bool:
    for field in ("region", "industry", "source"):
        wanted = match.get(field)
        if wanted is not None:
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if (lead.get(field) or "").casefold() not in {str(a).casefold() for a in allowed}:
                return False
    min_score = match.get("min_score")
    return min_score is None or (lead.get("score") or 0) >= min_score


def pick_rule(rules: list[dict], lead: dict, active_user_ids: set[str]) -> Target:
    """First matching rule wins; a rule naming an inactive (or unknown) user is passed over."""
    for rule in rules:
        if not rule_matches(rule.get("match") or {}, lead):
            continue
        target = rule["assign_to"]
        if "user_id" in target:
            if target["user_id"] in active_user_ids:
                return Target(rule=rule["name"], team_id=None, user_id=target["user_id"])
            continue
        return Target(rule=rule["name"], team_id=target["team_id"], strategy=rule.get("strategy", "round_robin"))
    return UNASSIGNED


def next_round_robin(reps: list[str], last: str | None) -> str | None:
    """The rep after `last` in a stable order (ids sorted), wrapping around."""
    if not reps:
        return None
    ordered = sorted(reps)
    if last is None:
        return ordered[0]
    for rep in ordered:
        if rep > last:
            return rep
    return ordered[0]


def least_loaded(open_leads: dict[str, int]) -> str | None:
    """The rep with the fewest open leads; ties go to the smallest id, so the choice is stable."""
    if not open_leads:
        return None
    return min(open_leads, key=lambda rep: (open_leads[rep], rep))
