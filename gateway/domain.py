"""Directory rules, free of I/O: who manages which teams, what a token says, who may hand over whom."""
from __future__ import annotations

import uuid

from crmkit.auth import Principal
from crmkit.teams import TeamNode, descendants

# Roles that may lead a team (be its manager_id).
TEAM_LEADER_ROLES = frozenset({"manager", "executive", "admin"})
MIN_PASSWORD_LENGTH = 10


def would_cycle(team_id: uuid.UUID, new_parent_id: uuid.UUID | None, teams: list[TeamNode]) -> bool:
    """Whether making new_parent_id the parent of team_id puts a team under itself."""
    if new_parent_id is None:
        return False
    return new_parent_id in descendants([team_id], teams)


def token_claims(*, user_id: uuid.UUID, name: str, role: str, team_id: uuid.UUID | None,
                 manages: set[uuid.UUID], token_version: int) -> dict:
    return {"sub": str(user_id), "name": name, "role": role,
            "teams": [str(team_id)] if team_id else [],
            "manages": sorted(str(t) for t in manages), "ver": token_version}


def may_hand_over(caller: Principal, leaver_team_id: uuid.UUID | None) -> bool:
    """The leaver's manager (their team is among the caller's `manages`), an executive, or an admin."""
    if caller.role in ("executive", "admin"):
        return True
    return caller.role == "manager" and leaver_team_id is not None and str(leaver_team_id) in caller.manages


RECORD_OWNER_ROLES = frozenset({"rep", "manager"})


def may_receive_handover(caller: Principal, role: str, team_id: uuid.UUID | None) -> bool:
    """Records go to someone who works them (a rep or manager); a manager keeps them in their teams."""
    if role not in RECORD_OWNER_ROLES:
        return False
    if caller.role == "manager":
        return team_id is not None and str(team_id) in caller.manages
    return True


def stale_claims(changes: dict) -> bool:
    """A change after which tokens already issued must stop working at once."""
    return bool({"password", "role", "team_id"} & set(changes)) or changes.get("active") is False


def handover_answered(expected: list[str], answers: dict) -> bool:
    return all(service in answers for service in expected)
