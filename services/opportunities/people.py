"""Who someone is, as this service's directory replica knows them: for acting on a user's behalf
where no token is at hand (a consumer, collision bookkeeping) and for naming whom to ask."""
from __future__ import annotations

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.directory import holder_now, principal_from_replica
from crmkit.errors import Forbidden, ValidationFailed

from . import domain
from .batch import batch
from .db import CompletedHandover, DirectoryTeam, DirectoryUser


def user(uow: UnitOfWork, user_id: str | None) -> DirectoryUser | None:
    if not user_id:
        return None
    with uow.session.no_autoflush:
        return uow.session.get(DirectoryUser, user_id)


def principal_of(uow: UnitOfWork, user_id: str, team_id: str | None = None) -> Principal:
    """Someone as the directory replica knows them, for deciding what they may see or change; a user
    the replica does not know (yet) is a rep of `team_id`. Once per transaction and user."""
    principals = batch(uow).principals
    if (user_id, team_id) not in principals:
        with uow.session.no_autoflush:
            known = principal_from_replica(uow.session, DirectoryUser, DirectoryTeam, user_id)
        principals[(user_id, team_id)] = known or Principal(user_id=user_id, role="rep",
                                                            teams=(team_id,) if team_id else ())
    return principals[(user_id, team_id)]


def manager_of(uow: UnitOfWork, user_id: str | None) -> str | None:
    """Whom to ask about someone's deal: the manager of their team (looked up once per transaction:
    an announcement of many collisions names the same few managers again and again)."""
    managers = batch(uow).managers
    if user_id not in managers:
        known = user(uow, user_id)
        team = None
        if known is not None and known.team_id:
            with uow.session.no_autoflush:
                team = uow.session.get(DirectoryTeam, known.team_id)
        managers[user_id] = team.manager_id if team else None
    return managers[user_id]


def remember_managers(uow: UnitOfWork, user_ids) -> None:
    """Look up the managers of many users in one query, for manager_of to answer from (an
    announcement runs while other look-alike writers wait for its locks: one query, not two a user)."""
    managers = batch(uow).managers
    wanted = sorted({u for u in user_ids if u and u not in managers})
    if not wanted:
        return
    with uow.session.no_autoflush:
        rows = dict(uow.session.execute(
            select(DirectoryUser.id, DirectoryTeam.manager_id)
            .outerjoin(DirectoryTeam, DirectoryTeam.id == DirectoryUser.team_id)
            .where(DirectoryUser.id.in_(wanted))).all())
    for user_id in wanted:
        managers[user_id] = rows.get(user_id)


def successor_now(uow: UnitOfWork, user_id: str | None) -> str | None:
    """Whoever holds the user's records now (crmkit.directory.holder_now, on this service's tables)."""
    return holder_now(uow, CompletedHandover, DirectoryUser, user_id)


def ownership(uow: UnitOfWork, principal: Principal, requested_owner: str | None) -> tuple[str, str | None]:
    """Who owns a new record: the creator, unless a leader names someone (CONTRACT §2)."""
    if requested_owner is None or requested_owner == principal.user_id:
        successor = successor_now(uow, principal.user_id)
        if successor != principal.user_id:  # created in the gap after the creator's handover
            return successor, getattr(user(uow, successor), "team_id", None)
        return principal.user_id, principal.primary_team
    domain.check_may_set_owner(principal)
    owner = user(uow, requested_owner)
    if owner is None or not owner.active or owner.role not in ("rep", "manager"):
        raise ValidationFailed("no active rep or manager with that id", errors={"owner_id": ["unknown or inactive"]})
    if principal.role == "manager" and owner.team_id not in principal.manages:
        raise Forbidden("managers give records only to people in their own teams")
    return owner.id, owner.team_id


def check_members(uow: UnitOfWork, members: list[dict]) -> list[dict]:
    """A virtual team's members, each once, every one an active user."""
    members = domain.unique_members(members)
    unknown = [m["user_id"] for m in members if (u := user(uow, m["user_id"])) is None or not u.active]
    if unknown:
        raise ValidationFailed("virtual team members must be active users",
                               errors={"members": [f"unknown or inactive: {u}" for u in unknown]})
    return members
