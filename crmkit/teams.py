"""Team trees, free of I/O: which teams a manager manages, sub-teams included (CONTRACT §2).
The gateway puts this in tokens (`manages`); a service uses it on its directory replica when it
acts for someone without a token at hand."""
from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TeamNode:
    id: Hashable
    manager_id: Hashable | None
    parent_team_id: Hashable | None


def descendants(root_ids: Iterable[Hashable], teams: Iterable[TeamNode]) -> set:
    """The teams given and every team below them (a cycle, which the directory refuses, cannot loop)."""
    children: dict = {}
    for team in teams:
        if team.parent_team_id is not None:
            children.setdefault(team.parent_team_id, []).append(team.id)
    found: set = set()
    stack = list(root_ids)
    while stack:
        team_id = stack.pop()
        if team_id in found:
            continue
        found.add(team_id)
        stack.extend(children.get(team_id, ()))
    return found


def managed_teams(user_id: Hashable, teams: list[TeamNode]) -> set:
    """CONTRACT §2: `manages` lists the teams a user manages, sub-teams included."""
    return descendants((t.id for t in teams if t.manager_id == user_id), teams)
