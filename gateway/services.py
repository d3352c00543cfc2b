"""The gateway's service layer: the directory, tokens and handovers. Routes call these inside a
unit of work; every change is published on crm.directory.v1 through the outbox."""
from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from crmkit.auth import Principal, Unauthorized, issue_token
from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, NotFound, ValidationFailed
from crmkit.settings import Settings
from crmkit.teams import TeamNode, managed_teams

from . import domain
from .config import GatewayConfig
from .db import DirectoryRepository, Handover, Team, User
from .events import directory_event, team_data, user_data
from .user_status import UserStatusCache, announce_change

# werkzeug's default KDF (scrypt, n=2**15, r=8, p=1), salted per password.
_DUMMY_HASH = generate_password_hash("not-a-password-anyone-has")


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def _nodes(teams: list[Team]) -> list[TeamNode]:
    return [TeamNode(t.id, t.manager_id, t.parent_team_id) for t in teams]


def manages(uow: UnitOfWork, user_id: uuid.UUID) -> set[uuid.UUID]:
    return managed_teams(user_id, _nodes(DirectoryRepository(uow.session).all_teams()))


# ---- tokens ----------------------------------------------------------------------------------------
def authenticate(uow: UnitOfWork, username: str, password: str) -> User:
    user = DirectoryRepository(uow.session).user_by_username(username)
    # Check a hash even for an unknown name, so response time does not reveal which names exist.
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid or not user.active:
        raise Unauthorized("wrong username or password")
    return user


def issue_for(uow: UnitOfWork, settings: Settings, config: GatewayConfig, user: User) -> dict:
    claims = domain.token_claims(user_id=user.id, name=user.name, role=user.role, team_id=user.team_id,
                                 manages=manages(uow, user.id), token_version=user.token_version)
    rs256 = config.jwt_private_key is not None
    token = issue_token(secret=config.jwt_private_key if rs256 else settings.jwt_secret, user_id=claims["sub"],
                        role=claims["role"], name=claims["name"], teams=claims["teams"], manages=claims["manages"],
                        issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                        ttl_seconds=config.token_ttl_seconds, algorithm="RS256" if rs256 else "HS256",
                        key_id=config.jwt_key_id, extra={"ver": claims["ver"]})
    return {"access_token": token, "token_type": "Bearer", "expires_in": config.token_ttl_seconds}


def check_current(open_uow: Callable[[], UnitOfWork], statuses: UserStatusCache, principal: Principal) -> Principal:
    """The caller as the directory knows them now. A token of a deactivated user, or one whose claims
    went stale (password, role or team changed), stops working at once, not when it expires; and a
    validly signed token whose role, team or managed teams are not the directory's is refused."""
    try:
        user_id = uuid.UUID(principal.user_id)
    except ValueError:
        raise Unauthorized("token subject is not a user of this directory") from None
    status = statuses.status(open_uow, user_id)
    if status is None or not status.active:
        raise Unauthorized("this user is not active")
    if principal.token_version != status.token_version:
        raise Unauthorized("token is no longer valid (password, role or team changed); sign in again")
    teams = (str(status.team_id),) if status.team_id else ()
    if principal.role != status.role or tuple(principal.teams) != teams or set(principal.manages) != set(status.manages):
        raise Unauthorized("the token's claims are not the directory's; sign in again")
    return principal


def me(uow: UnitOfWork, principal: Principal) -> dict:
    user = DirectoryRepository(uow.session).user(uuid.UUID(principal.user_id))
    return {"id": str(user.id), "username": user.username, "name": user.name, "role": user.role,
            "team_id": str(user.team_id) if user.team_id else None, "region": user.region,
            "teams": [str(user.team_id)] if user.team_id else [],
            "manages": sorted(str(t) for t in manages(uow, user.id))}


# ---- users -----------------------------------------------------------------------------------------
def _publish_user(uow: UnitOfWork, settings: Settings, event_type: str, user: User, actor) -> None:
    uow.publish(*directory_event(settings, event_type, user.id, user_data(user), actor=actor))


def _require_team(repo: DirectoryRepository, team_id: uuid.UUID | None, field: str = "team_id") -> None:
    if team_id is not None and repo.team(team_id) is None:
        raise ValidationFailed("no such team", errors={field: ["no such team"]})


def create_user(uow: UnitOfWork, settings: Settings, actor: str, data: dict) -> User:
    repo = DirectoryRepository(uow.session)
    if repo.user_by_username(data["username"]) is not None:
        raise Conflict("that username is taken", errors={"username": ["taken"]})
    _require_team(repo, data.get("team_id"))
    now = utcnow()
    user = User(id=uuid.uuid4(), username=data["username"].lower(), name=data["name"].strip(), role=data["role"],
                team_id=data.get("team_id"), region=data.get("region"), active=data.get("active", True),
                password_hash=hash_password(data["password"]), token_version=1, version=1,
                created_at=now, updated_at=now)
    uow.session.add(user)
    _publish_user(uow, settings, "user.created", user, actor)
    return user


def get_user(uow: UnitOfWork, user_id: uuid.UUID) -> User:
    user = DirectoryRepository(uow.session).user(user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def update_user(uow: UnitOfWork, settings: Settings, actor: str, user_id: uuid.UUID, changes: dict,
                require_if_match: Callable[[int], None]) -> User:
    repo = DirectoryRepository(uow.session)
    user = repo.user(user_id, for_update=True)
    if user is None:
        raise NotFound("no such user")
    require_if_match(user.version)
    if "team_id" in changes:
        _require_team(repo, changes["team_id"])
    if str(user.id) == actor and (changes.get("active") is False or changes.get("role", "admin") != "admin"):
        raise Conflict("admins may not deactivate or demote themselves; ask another admin")
    if changes.get("active") is False and uow.session.execute(select(Handover.id).where(
            Handover.to_user_id == user.id, Handover.status == "pending").limit(1)).first():
        # The services may already be moving records to them: wait until the handover has answered.
        raise Conflict("this user is receiving a handover that is still pending; deactivate them once it has "
                       "completed", retry_after=5)
    for name in ("name", "role", "team_id", "region", "active"):
        if name in changes:
            setattr(user, name, changes[name].strip() if name == "name" else changes[name])
    if "password" in changes:
        user.password_hash = hash_password(changes["password"])
    if domain.stale_claims(changes):
        user.token_version += 1
    uow.session.flush()
    announce_change(uow, user.id)
    _publish_user(uow, settings, "user.deactivated" if changes.get("active") is False else "user.updated", user, actor)
    return user


def list_users(uow: UnitOfWork, args: dict):
    return DirectoryRepository(uow.session).list_users(args, limit=args["limit"], cursor=args.get("cursor"))


# ---- teams -----------------------------------------------------------------------------------------
def _check_team_links(repo: DirectoryRepository, team_id: uuid.UUID | None, data: dict) -> None:
    if data.get("manager_id") is not None:
        manager = repo.user(data["manager_id"])
        if manager is None or manager.role not in domain.TEAM_LEADER_ROLES:
            raise ValidationFailed("the manager must be a user with role manager, executive or admin",
                                   errors={"manager_id": ["not a manager, executive or admin"]})
    if "parent_team_id" in data:
        _require_team(repo, data["parent_team_id"], "parent_team_id")
        if team_id is not None and domain.would_cycle(team_id, data["parent_team_id"], _nodes(repo.all_teams())):
            raise ValidationFailed("a team cannot sit below itself",
                                   errors={"parent_team_id": ["would make a cycle"]})


def create_team(uow: UnitOfWork, settings: Settings, actor: str, data: dict) -> Team:
    repo = DirectoryRepository(uow.session)
    _check_team_links(repo, None, data)
    if uow.session.execute(select(Team.id).where(Team.name == data["name"].strip())).first():
        raise Conflict("a team with that name exists", errors={"name": ["taken"]})
    now = utcnow()
    before = _managers_scope(repo)
    team = Team(id=uuid.uuid4(), name=data["name"].strip(), manager_id=data.get("manager_id"),
                parent_team_id=data.get("parent_team_id"), region=data.get("region"), version=1,
                created_at=now, updated_at=now)
    uow.session.add(team)
    uow.session.flush()
    uow.publish(*directory_event(settings, "team.created", team.id, team_data(team), actor=actor))
    # A team created under someone's tree (or with a manager) widens what they manage.
    _end_stale_manager_tokens(uow, settings, repo, before, actor)
    return team


def get_team(uow: UnitOfWork, team_id: uuid.UUID) -> Team:
    team = DirectoryRepository(uow.session).team(team_id)
    if team is None:
        raise NotFound("no such team")
    return team


def update_team(uow: UnitOfWork, settings: Settings, actor: str, team_id: uuid.UUID, changes: dict,
                require_if_match: Callable[[int], None]) -> Team:
    repo = DirectoryRepository(uow.session)
    team = repo.team(team_id, for_update=True)
    if team is None:
        raise NotFound("no such team")
    require_if_match(team.version)
    _check_team_links(repo, team.id, changes)
    if "name" in changes and changes["name"].strip() != team.name and uow.session.execute(
            select(Team.id).where(Team.name == changes["name"].strip())).first():
        raise Conflict("a team with that name exists", errors={"name": ["taken"]})
    before = _managers_scope(repo)
    for name in ("name", "manager_id", "parent_team_id", "region"):
        if name in changes:
            setattr(team, name, changes[name].strip() if name == "name" else changes[name])
    uow.session.flush()
    uow.publish(*directory_event(settings, "team.updated", team.id, team_data(team), actor=actor))
    _end_stale_manager_tokens(uow, settings, repo, before, actor)
    return team


def _end_stale_manager_tokens(uow: UnitOfWork, settings: Settings, repo: DirectoryRepository,
                              before: dict, actor: str) -> None:
    """Whoever gained or lost a managed team since `before` holds a token with a stale `manages`: end
    it now, here and (through user.updated, which carries the new token version) at every service.
    (Left alone, the token would be refused by every service anyway, but only after each had waited
    for its replica to catch up with a claim that never comes.)"""
    after = _managers_scope(repo)
    for user_id in sorted({u for u in before.keys() | after.keys() if before.get(u) != after.get(u)}, key=str):
        manager = repo.user(user_id, for_update=True)
        if manager is not None:
            manager.token_version += 1
            uow.session.flush()
            announce_change(uow, manager.id)
            _publish_user(uow, settings, "user.updated", manager, actor)


def _managers_scope(repo: DirectoryRepository) -> dict[uuid.UUID, set[uuid.UUID]]:
    nodes = _nodes(repo.all_teams())
    return {t.manager_id: managed_teams(t.manager_id, nodes) for t in nodes if t.manager_id is not None}


def list_teams(uow: UnitOfWork, args: dict):
    return DirectoryRepository(uow.session).list_teams(limit=args["limit"], cursor=args.get("cursor"))


# ---- bootstrap ------------------------------------------------------------------------------------
def bootstrap_admin(uow: UnitOfWork, settings: Settings, password: str | None) -> bool:
    """CONTRACT §2: an empty directory gets the user `admin`, with CRM_ADMIN_PASSWORD."""
    if DirectoryRepository(uow.session).any_user():
        return False
    if not password:
        raise RuntimeError("the directory is empty: set CRM_ADMIN_PASSWORD to create the admin user")
    create_user(uow, settings, "bootstrap", {"username": "admin", "password": password, "name": "Administrator",
                                            "role": "admin", "region": None})
    return True


# ---- handover -------------------------------------------------------------------------------------
def request_handover(uow: UnitOfWork, settings: Settings, config: GatewayConfig, principal: Principal,
                     user_id: uuid.UUID, to_user_id: uuid.UUID) -> Handover:
    repo = DirectoryRepository(uow.session)
    leaver = repo.user(user_id)
    if leaver is None or not domain.may_hand_over(principal, leaver.team_id):
        raise NotFound("no such user among the teams you manage")
    successor = repo.user(to_user_id)
    if successor is None or not successor.active or not domain.may_receive_handover(principal, successor.role,
                                                                                     successor.team_id):
        raise ValidationFailed("hand over to an active rep or manager (for a manager: one of the teams you manage)",
                               errors={"to_user_id": ["not an active rep or manager you may hand records to"]})
    if successor.id == leaver.id:
        raise ValidationFailed("a user cannot hand over to themselves", errors={"to_user_id": ["same user"]})
    now = utcnow()
    handover = Handover(id=uuid.uuid4(), from_user_id=leaver.id, to_user_id=successor.id,
                        requested_by=principal.user_id, team_id=leaver.team_id,
                        expected=list(config.handover_services), services={}, status="pending", version=1,
                        created_at=now)
    uow.session.add(handover)
    # Keyed by the leaver: on the same partition as their user.* events, so a service that applies a
    # deactivation before the handover request sees them in that order.
    uow.publish(*directory_event(settings, "handover.requested", leaver.id, {
        "handover_id": str(handover.id), "from_user_id": str(leaver.id), "to_user_id": str(successor.id)},
        actor=principal.user_id))
    return handover


def get_handover(uow: UnitOfWork, principal: Principal, handover_id: uuid.UUID) -> dict:
    handover = DirectoryRepository(uow.session).handover(handover_id)
    if handover is None or not domain.may_hand_over(principal, handover.team_id):
        raise NotFound("no such handover")
    return {"id": handover.id, "from_user_id": handover.from_user_id, "to_user_id": handover.to_user_id,
            "status": handover.status, "services": handover.services,
            "waiting_for": [s for s in handover.expected if s not in handover.services],
            "created_at": handover.created_at, "completed_at": handover.completed_at}


def record_handover_answer(uow: UnitOfWork, envelope: dict) -> None:
    """A service's handover.completed: note how many records it moved; complete when all have."""
    data = envelope["data"]
    try:
        handover_id, service, moved = uuid.UUID(str(data["handover_id"])), str(data["service"]), int(data["moved"])
    except (KeyError, ValueError, TypeError) as exc:
        raise Reject(f"handover.completed with bad data: {exc!r}") from None
    handover = DirectoryRepository(uow.session).handover(handover_id, for_update=True)
    if handover is None:
        raise Reject(f"handover {handover_id} is not one of ours")
    if service not in handover.expected or service in handover.services:
        return  # a service we did not ask, or a second answer: the first one stands
    answer = {"moved": moved, "at": envelope["time"].isoformat()}
    if data.get("status") == "failed":
        answer["failure"] = str(data.get("failure") or "failed")[:500]
    handover.services = {**handover.services, service: answer}
    if handover.status == "pending" and domain.handover_answered(handover.expected, handover.services):
        # Failed when any service could not move the records (its successor was deactivated
        # meanwhile): what moved elsewhere stays moved, and the leader hands over again.
        handover.status = "failed" if any("failure" in a for a in handover.services.values()) else "completed"
        handover.completed_at = utcnow()
