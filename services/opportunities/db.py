"""Opportunities tables (SQLAlchemy 2 ORM): accounts, contacts, deals and what they carry, and the
repositories that put row visibility into every query (CONTRACT §2). The rep's day's tables are in
day_db.py, imported here so that Base.metadata (migrations, checks) holds every table."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import ColumnElement

from crmkit.auth import Principal
from crmkit.db import UTCDateTime, utcnow
from crmkit.directory import CompletedHandoverColumns, DirectoryTeamColumns, DirectoryUserColumns
from crmkit.pagination import SortSpec, paginate
from crmkit.visibility import SEES_EVERYTHING, VisibilityRule, visible

from . import day_db  # noqa: F401 - the rep's day's tables, in the same metadata
from .base import KIT_TABLES, Base, Money  # noqa: F401 - KIT_TABLES: bootstrap and the benches import it here


class _Record:
    """Columns every owned record carries."""

    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at = mapped_column(UTCDateTime, nullable=True)


class Account(_Record, Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(3), default="b2b")
    industry: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(10), default="unranked")
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_accounts_owner_created", "owner_id", "created_at", "id"),
        Index("ix_accounts_team_created", "team_id", "created_at", "id"),
        Index("ix_accounts_created", "created_at", "id"),
        Index("ix_accounts_name", "name", "id"),
        Index("ix_accounts_updated", "updated_at", "id"),
    )


class AccountMember(Base):
    """The account's virtual team: people who are not its owner but work it (CONTRACT §4)."""

    __tablename__ = "account_members"

    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("accounts.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20))


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class Opportunity(_Record, Base):
    __tablename__ = "opportunities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(40))
    probability: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    expected_close_date: Mapped[dt.date | None] = mapped_column(Date)
    region: Mapped[str | None] = mapped_column(String(100))
    products: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(10), default="open")
    lost_reason: Mapped[str | None] = mapped_column(Text)
    source_lead_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Done checklist items of every stage, {"stage:item": true}: moving back and forth keeps them.
    checklist_done: Mapped[dict] = mapped_column(JSON, default=dict)
    stage_entered_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    closed_at = mapped_column(UTCDateTime, nullable=True)
    cycle_days: Mapped[int | None] = mapped_column(Integer)  # created → closed, kept for the sales-cycle report
    expense_total: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_opportunities_owner_created", "owner_id", "created_at", "id"),
        Index("ix_opportunities_team_created", "team_id", "created_at", "id"),
        Index("ix_opportunities_created", "created_at", "id"),
        Index("ix_opportunities_account", "account_id"),
        Index("ix_opportunities_status_close", "status", "expected_close_date"),
        Index("ix_opportunities_owner_status", "owner_id", "status"),
        Index("ix_opportunities_team_status", "team_id", "status"),
        Index("ix_opportunities_source_lead", "source_lead_id"),
        # The other sort orders of the list (keyset pages need (column, id)).
        Index("ix_opportunities_amount", "amount", "id"),
        Index("ix_opportunities_updated", "updated_at", "id"),
    )


class OpportunityMember(Base):
    __tablename__ = "opportunity_members"

    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("opportunities.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(20))


class MatchKey(Base):
    """Match keys of each open opportunity (collisions.stored_keys: bigrams of the customer's
    distinctive name; product, region and close month): where collision detection finds its
    candidates without scanning every open opportunity. Rows exist only while it is open."""

    __tablename__ = "opportunity_match_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, index=True)
    # The deal's owner, so candidates of other owners are picked from this index alone. Kept
    # current: every owner change runs detection again, which rewrites the keys.
    owner_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("ix_opportunity_match_keys_probe", "key", "owner_id", "opportunity_id"),)


class Collision(Base):
    """One direction of a detected collision; each one is stored both ways."""

    __tablename__ = "opportunity_collisions"

    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    other_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, index=True)
    score: Mapped[float] = mapped_column(Float)
    signals: Mapped[dict] = mapped_column(JSON)
    reasons: Mapped[list] = mapped_column(JSON)
    detected_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CollisionDismissal(Base):
    """A pair of deals that someone who sees both decided are not the same deal: detection does not
    flag the pair again (stored once, with the smaller id first)."""

    __tablename__ = "opportunity_collision_dismissals"

    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    other_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    dismissed_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    dismissed_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CollisionRecheck(Base):
    """Open deals whose collisions must be computed again (their account was renamed): the worker
    takes them in small batches, so one rename never holds a write transaction over every deal."""

    __tablename__ = "opportunity_collision_rechecks"

    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    queued_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)


class Activity(Base):
    """A call, visit, meeting... on an account or on one of its opportunities."""

    __tablename__ = "activities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("accounts.id"))
    opportunity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("opportunities.id"))
    kind: Mapped[str] = mapped_column(String(20))
    summary: Mapped[str | None] = mapped_column(Text)
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    next_contact_at = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    __table_args__ = (
        Index("ix_activities_account_occurred", "account_id", "occurred_at", "id"),
        Index("ix_activities_opportunity_occurred", "opportunity_id", "occurred_at", "id"),
        Index("ix_activities_creator_occurred", "created_by", "occurred_at"),  # a rep's day (daily reports)
    )


class Expense(Base):
    __tablename__ = "expenses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("opportunities.id"), index=True)
    category: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    incurred_on: Mapped[dt.date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PipelineDocument(Base):
    """The stages document (GET/PUT /pipeline/stages), versioned for If-Match."""

    __tablename__ = "pipeline_documents"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    body: Mapped[dict] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class AccountRevenue(Base):
    """Revenue per order from crm.orders.v1, for account tiers: one row per order, so a confirmed
    order that is later paid counts once (with the later amount)."""

    __tablename__ = "account_revenue"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(20))
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    recorded_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class TierState(Base):
    """When the tiers were last computed, and whether revenue arrived since (the tier loop's cue)."""

    __tablename__ = "tier_state"

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)
    computed_at = mapped_column(UTCDateTime, nullable=True)


class DirectoryUser(DirectoryUserColumns, Base):
    """Replica of the gateway's users (crm.directory.v1): owners' teams and managers, handovers."""


class DirectoryTeam(DirectoryTeamColumns, Base):
    pass


class CompletedHandover(CompletedHandoverColumns, Base):
    pass


# ---- visibility -------------------------------------------------------------------------------------
# "id IN (the user's memberships)" rather than a correlated EXISTS: PostgreSQL hashes the few
# memberships once instead of probing the members index for every row a report scans.
def _opportunity_member(user_id: str) -> ColumnElement:
    return Opportunity.id.in_(select(OpportunityMember.opportunity_id).where(OpportunityMember.user_id == user_id))


def _account_member(user_id: str) -> ColumnElement:
    return Account.id.in_(select(AccountMember.account_id).where(AccountMember.user_id == user_id))


OPPORTUNITY_VISIBILITY = VisibilityRule(owner_column=Opportunity.owner_id, team_column=Opportunity.team_id,
                                        member_condition=_opportunity_member)
ACCOUNT_VISIBILITY = VisibilityRule(owner_column=Account.owner_id, team_column=Account.team_id,
                                    member_condition=_account_member)


def visible_row(session: Session, model, rule: VisibilityRule, principal: Principal, row_id, *, for_update=False):
    """One row of `model` by id if the caller sees it by `rule` (None otherwise), locked if asked."""
    stmt = select(model).where(model.id == row_id, visible(principal, rule))
    return session.execute(stmt.with_for_update(of=model) if for_update else stmt).scalar_one_or_none()


def opportunity_visible(principal: Principal) -> ColumnElement:
    return visible(principal, OPPORTUNITY_VISIBILITY)


def account_visible(principal: Principal) -> ColumnElement:
    """An account is visible to whoever sees it by its own owner, team and virtual team, and to
    whoever sees one of its opportunities (a rep selling to an account someone else owns)."""
    if principal.role in SEES_EVERYTHING:
        return visible(principal, ACCOUNT_VISIBILITY)
    via_deal = exists().where(Opportunity.account_id == Account.id, Opportunity.deleted_at.is_(None),
                              opportunity_visible(principal))
    return or_(visible(principal, ACCOUNT_VISIBILITY), via_deal)


ACCOUNT_SORTABLE = {"created_at", "updated_at", "name"}
OPPORTUNITY_SORTABLE = {"created_at", "updated_at", "amount"}


class AccountRepository:
    def __init__(self, session: Session, principal: Principal):
        self.session, self.principal = session, principal

    def _scope(self):
        return select(Account).where(Account.deleted_at.is_(None), account_visible(self.principal))

    def get(self, account_id: uuid.UUID, *, for_update: bool = False) -> Account | None:
        stmt = self._scope().where(Account.id == account_id)
        return self.session.execute(stmt.with_for_update(of=Account) if for_update else stmt).scalar_one_or_none()

    def list(self, filters: dict, *, sort: SortSpec, limit: int, cursor: str | None):
        stmt = self._scope()
        for name in ("type", "tier", "owner_id", "team_id", "region", "industry"):
            if filters.get(name) is not None:
                stmt = stmt.where(getattr(Account, name) == filters[name])
        if filters.get("q"):
            stmt = stmt.where(func.lower(Account.name).like(f"%{filters['q'].lower()}%"))
        return paginate(self.session, stmt, model=Account, sort=sort, limit=limit, cursor=cursor)


class OpportunityRepository:
    def __init__(self, session: Session, principal: Principal):
        self.session, self.principal = session, principal

    def _scope(self):
        return select(Opportunity).where(Opportunity.deleted_at.is_(None), opportunity_visible(self.principal))

    def get(self, opportunity_id: uuid.UUID, *, for_update: bool = False) -> Opportunity | None:
        stmt = self._scope().where(Opportunity.id == opportunity_id)
        return self.session.execute(stmt.with_for_update(of=Opportunity) if for_update else stmt).scalar_one_or_none()

    def visible_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        return set(self.session.execute(select(Opportunity.id).where(
            Opportunity.id.in_(ids), Opportunity.deleted_at.is_(None), opportunity_visible(self.principal))).scalars())

    def list(self, filters: dict, *, sort: SortSpec, limit: int, cursor: str | None):
        stmt = self._scope()
        for name in ("stage", "status", "owner_id", "team_id", "account_id", "region"):
            if filters.get(name) is not None:
                stmt = stmt.where(getattr(Opportunity, name) == filters[name])
        if filters.get("close_before") is not None:
            stmt = stmt.where(Opportunity.expected_close_date < filters["close_before"])
        if filters.get("close_after") is not None:
            stmt = stmt.where(Opportunity.expected_close_date >= filters["close_after"])
        if filters.get("q"):
            stmt = stmt.where(func.lower(Opportunity.name).like(f"%{filters['q'].lower()}%"))
        return paginate(self.session, stmt, model=Opportunity, sort=sort, limit=limit, cursor=cursor)


class MemberRepository:
    """Deals' virtual teams: who is on a deal besides its owner, and as what."""

    def __init__(self, session: Session):
        self.session = session

    def teams(self, opportunity_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict]]:
        teams: dict = {i: [] for i in opportunity_ids}
        if opportunity_ids:
            for m in self.session.execute(select(OpportunityMember).where(
                    OpportunityMember.opportunity_id.in_(opportunity_ids)).order_by(OpportunityMember.user_id)).scalars():
                teams[m.opportunity_id].append({"user_id": m.user_id, "role": m.role})
        return teams

    def team(self, opportunity_id: uuid.UUID) -> list[dict]:
        return self.teams([opportunity_id])[opportunity_id]


def open_deal_ids():
    """The ids of open, undeleted opportunities, as a subquery."""
    return select(Opportunity.id).where(Opportunity.status == "open", Opportunity.deleted_at.is_(None))
