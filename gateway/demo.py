"""The demo organisation `make run` seeds (CONTRACT §2): an executive, two teams each with a manager
and reps, a marketing and a service user. Created through the service layer, so every user and team
is published on crm.directory.v1 like any other."""
from __future__ import annotations

from crmkit.db import UnitOfWork
from crmkit.settings import Settings

from . import services
from .db import DirectoryRepository

DEMO_PASSWORD = "demo-password"  # noqa: S105 - development data, printed by make run

# username, name, role, team (by name), region
DEMO_USERS = [
    ("erin", "Erin Executive", "executive", None, None),
    ("mia", "Mia Manager (East)", "manager", "East", "east"),
    ("ann", "Ann Rep (East)", "rep", "East", "east"),
    ("amy", "Amy Rep (East)", "rep", "East", "east"),
    ("wes", "Wes Manager (West)", "manager", "West", "west"),
    ("bo", "Bo Rep (West)", "rep", "West", "west"),
    ("ben", "Ben Rep (West)", "rep", "West", "west"),
    ("mark", "Mark Marketing", "marketing", None, None),
    ("sam", "Sam Service", "service", None, None),
]
DEMO_TEAMS = [("East", "mia", "east"), ("West", "wes", "west")]


def seed(uow: UnitOfWork, settings: Settings) -> list[tuple[str, str]]:
    """Creates whatever of the demo organisation is missing; returns (username, role) of every demo user."""
    repo = DirectoryRepository(uow.session)
    teams = {}
    for name, _manager, region in DEMO_TEAMS:
        existing = next((t for t in repo.all_teams() if t.name == name), None)
        teams[name] = existing or services.create_team(uow, settings, "demo-seed", {"name": name, "region": region})
        uow.session.flush()
    users = {}
    for username, name, role, team, region in DEMO_USERS:
        users[username] = repo.user_by_username(username) or services.create_user(uow, settings, "demo-seed", {
            "username": username, "password": DEMO_PASSWORD, "name": name, "role": role,
            "team_id": teams[team].id if team else None, "region": region})
        uow.session.flush()
    for name, manager, _region in DEMO_TEAMS:
        if teams[name].manager_id is None:
            services.update_team(uow, settings, "demo-seed", teams[name].id, {"manager_id": users[manager].id},
                                 lambda _version: None)
    return [(username, role) for username, _n, role, _t, _r in DEMO_USERS]
