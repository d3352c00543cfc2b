"""Who someone is, as the leads service's directory replica knows them: for acting on a user's
behalf where no token is at hand (a consumer, an import), for routing, and for naming whom to ask."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.directory import (
    holder_now,
    principal_from_replica,
)

from .batch import batch
from .db import (
    CompletedHandover,
    DirectoryTeam,
    DirectoryUser,
    Lead,
)


def directory_user(uow: UnitOfWork, user_id: str) -> DirectoryUser | None:
    with uow.session.no_autoflush:
        return uow.session.get(DirectoryUser, user_id)


def replica_principal(uow: UnitOfWork, user_id: str) -> Principal | None:
    with uow.session.no_autoflush:
        return principal_from_replica(uow.session, DirectoryUser, DirectoryTeam, user_id)


def importer_active(uow: UnitOfWork, user_id: str) -> bool:
    """Whether someone whose queued work runs on (an import) is still active; one the replica does not
    know is taken as active (the gateway let them in)."""
    user = directory_user(uow, user_id)
    return user is None or bool(user.active)


def team_of(uow: UnitOfWork, user_id: str) -> str | None:
    user = directory_user(uow, user_id)
    return user.team_id if user else None


def active_reps(uow: UnitOfWork, team_id: str) -> list[str]:
    reps = batch(uow).reps
    if team_id not in reps:
        with uow.session.no_autoflush:
            reps[team_id] = list(uow.session.execute(select(DirectoryUser.id).where(
                DirectoryUser.team_id == team_id, DirectoryUser.role == "rep", DirectoryUser.active.is_(True))
            ).scalars())
    return reps[team_id]


def is_active(uow: UnitOfWork, user_id: str) -> bool:
    user = directory_user(uow, user_id)
    return bool(user and user.active)


def manager_of(uow: UnitOfWork, lead: Lead) -> str | None:
    """Whom to ask about a lead: the manager of its team (or of its owner's team)."""
    team_id = lead.team_id or (team_of(uow, lead.owner_id) if lead.owner_id else None)
    if not team_id:
        return None
    with uow.session.no_autoflush:
        team = uow.session.get(DirectoryTeam, team_id)
    return team.manager_id if team else None


def successor_now(uow: UnitOfWork, user_id: str | None) -> str | None:
    """Whoever holds the user's records now (crmkit.directory.holder_now, on this service's tables)."""
    return holder_now(uow, CompletedHandover, DirectoryUser, user_id)
