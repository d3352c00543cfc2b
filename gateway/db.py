"""The directory (users, teams) and handovers: the gateway's own tables."""
from __future__ import annotations

import uuid

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Uuid, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.pagination import SortSpec, paginate
from crmkit.tables import add_kit_tables


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    manager_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    parent_team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("teams.id"), index=True)
    region: Mapped[str | None] = mapped_column(String(100))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("teams.id"), index=True)
    region: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    # Bumped whenever a token's claims would go stale (password, role, team, deactivation): tokens
    # carry it as `ver`, and the gateway refuses one whose `ver` is not the current one.
    token_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class Handover(Base):
    """A leaver's open records moving to a colleague: one request, one answer per service."""

    __tablename__ = "handovers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    from_user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    to_user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    requested_by: Mapped[str] = mapped_column(String(64))
    # The teams the caller could see when asking: a manager reads back only handovers of their teams.
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    expected: Mapped[list] = mapped_column(JSON)  # services that must answer
    services: Mapped[dict] = mapped_column(JSON, default=dict)  # service -> {"moved": n, "at": ...}
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    completed_at = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}

    __table_args__ = (Index("ix_handovers_created", "created_at", "id"),)


class SignInFailure(Base):
    """Failed sign-ins per client address and user name in the current window (gateway/sign_in.py)."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of address and name
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    window_started_at = mapped_column(UTCDateTime, nullable=False, index=True)


class DirectoryRepository:
    def __init__(self, session: Session):
        self.session = session

    def user(self, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
        stmt = select(User).where(User.id == user_id)
        return self.session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()

    def user_by_username(self, username: str) -> User | None:
        return self.session.execute(select(User).where(User.username == username.lower())).scalar_one_or_none()

    def team(self, team_id: uuid.UUID, *, for_update: bool = False) -> Team | None:
        stmt = select(Team).where(Team.id == team_id)
        return self.session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()

    def all_teams(self) -> list[Team]:
        return list(self.session.execute(select(Team)).scalars())

    def any_user(self) -> bool:
        return self.session.execute(select(User.id).limit(1)).first() is not None

    def list_users(self, filters: dict, *, limit: int, cursor: str | None):
        stmt = select(User)
        for name in ("role", "team_id", "region", "active"):
            if filters.get(name) is not None:
                stmt = stmt.where(getattr(User, name) == filters[name])
        if filters.get("q"):
            needle = f"%{filters['q'].lower()}%"
            stmt = stmt.where(User.username.like(needle) | User.name.ilike(needle))
        return paginate(self.session, stmt, model=User, sort=SortSpec("created_at", descending=False),
                        limit=limit, cursor=cursor)

    def list_teams(self, *, limit: int, cursor: str | None):
        return paginate(self.session, select(Team), model=Team, sort=SortSpec("created_at", descending=False),
                        limit=limit, cursor=cursor)

    def handover(self, handover_id: uuid.UUID, *, for_update: bool = False) -> Handover | None:
        stmt = select(Handover).where(Handover.id == handover_id)
        return self.session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()
