"""Leads tables (SQLAlchemy 2 ORM) and the repository that applies row visibility to every query."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    Uuid,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from crmkit.auth import Principal
from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.directory import CompletedHandoverColumns, DirectoryTeamColumns, DirectoryUserColumns
from crmkit.pagination import SortSpec, paginate
from crmkit.tables import add_kit_tables
from crmkit.visibility import VisibilityRule, visible

from .dedupe import keys_for


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    company: Mapped[str | None] = mapped_column(String(200))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    region: Mapped[str | None] = mapped_column(String(100))
    industry: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(20), default="other")
    campaign: Mapped[str | None] = mapped_column(String(200))
    interest: Mapped[str | None] = mapped_column(Text)
    quoted_price: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    estimated_value: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="new")
    score: Mapped[int] = mapped_column(Integer, default=0)
    score_reasons: Mapped[list] = mapped_column(JSON, default=list)
    # The score without the rules on money fields: what roles that may not read money (marketing)
    # see, filter and sort by, so a score cannot tell them what the money fields hide.
    score_public: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    follow_up_due_at = mapped_column(UTCDateTime, nullable=True)
    last_activity_at = mapped_column(UTCDateTime, nullable=True)
    touches: Mapped[int] = mapped_column(Integer, default=1)
    external_id: Mapped[str | None] = mapped_column(String(200))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
    deleted_at = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # Dedupe keys (see dedupe.py), kept in step with the fields they come from.
    email_key: Mapped[str | None] = mapped_column(String(320))
    phone_key: Mapped[str | None] = mapped_column(String(32))
    company_contact_key: Mapped[str | None] = mapped_column(String(420))
    company_key: Mapped[str | None] = mapped_column(String(200))  # a customer's leads, by company
    activities: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    assigned_by_rule: Mapped[str | None] = mapped_column(String(200))
    assigned_at = mapped_column(UTCDateTime, nullable=True)
    converted_at = mapped_column(UTCDateTime, nullable=True)
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    opportunity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Why the last conversion was refused by the opportunities service (the lead was rolled back),
    # and the status it goes back to then.
    conversion_error: Mapped[str | None] = mapped_column(Text)
    converted_from_status: Mapped[str | None] = mapped_column(String(20))

    # version_id_col: every UPDATE is "... WHERE id=:id AND version=:seen", so a concurrent
    # change is detected (StaleDataError → 412) instead of silently overwritten.
    __mapper_args__ = {"version_id_col": version}

    __table_args__ = (
        # Keyset pages per visibility scope: rep (owner), manager (team), everyone (all).
        Index("ix_leads_owner_created", "owner_id", "created_at", "id"),
        Index("ix_leads_team_created", "team_id", "created_at", "id"),
        Index("ix_leads_created", "created_at", "id"),
        Index("ix_leads_status", "status"),
        Index("ix_leads_external_id", "external_id"),
        Index("ix_leads_email_key", "email_key"),
        Index("ix_leads_phone_key", "phone_key"),
        Index("ix_leads_company_contact_key", "company_contact_key"),
        Index("ix_leads_owner_status", "owner_id", "status"),
        Index("ix_leads_company_key", "company_key"),
        Index("ix_leads_account_id", "account_id"),
    )


class LeadActivity(Base):
    __tablename__ = "lead_activities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    lead_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("leads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    summary: Mapped[str | None] = mapped_column(Text)
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    next_contact_at = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DuplicateClaim(Base):
    """Someone brought a prospect that is already a lead they may not change (another rep's, another
    team's): nothing of theirs is written into the lead; the claim records who, when, how and what
    they brought, for the lead's owner and their manager to see (GET /leads/{id}/duplicate-claims)."""

    __tablename__ = "lead_duplicate_claims"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    lead_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("leads.id"))
    claimed_by: Mapped[str] = mapped_column(String(200))
    claimed_role: Mapped[str | None] = mapped_column(String(20))
    via: Mapped[str] = mapped_column(String(20))
    brought: Mapped[dict] = mapped_column(JSON)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    __table_args__ = (Index("ix_lead_duplicate_claims_lead", "lead_id", "created_at"),)


class RuleDocument(Base):
    """The scoring and the assignment rules, each one versioned document (ETag/If-Match)."""

    __tablename__ = "rule_documents"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    body: Mapped[dict] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class DirectoryUser(DirectoryUserColumns, Base):
    """Replica of the gateway's users, from crm.directory.v1: rules never call another service."""


class DirectoryTeam(DirectoryTeamColumns, Base):
    pass


class CompletedHandover(CompletedHandoverColumns, Base):
    pass


class AssignmentCursor(Base):
    """Where round robin stands in each team (the last rep given a lead)."""

    __tablename__ = "assignment_cursors"

    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_user_id: Mapped[str | None] = mapped_column(String(64))


class LeadImport(Base):
    """A CSV import: the file, where the worker has got to, and the counts so far. The worker
    commits each chunk's leads together with `rows_done`, so a killed import resumes exactly."""

    __tablename__ = "lead_imports"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|completed|failed
    filename: Mapped[str | None] = mapped_column(String(300))
    # Deferred: loaded only when a worker starts (or resumes) reading the file, not for every chunk.
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_role: Mapped[str] = mapped_column(String(20))
    requested_team: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    merged: Mapped[int] = mapped_column(Integer, default=0)
    # Rows whose prospect is already a lead the importer may not change: recorded as duplicate claims.
    claimed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    failure: Mapped[str | None] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    finished_at = mapped_column(UTCDateTime, nullable=True)


class LeadImportError(Base):
    __tablename__ = "lead_import_errors"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("lead_imports.id"), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    errors: Mapped[dict] = mapped_column(JSON)


LEAD_VISIBILITY = VisibilityRule(
    owner_column=Lead.owner_id,
    team_column=Lead.team_id,
    also_sees_all=frozenset({"marketing"}),
    managers_see_unowned=True,  # the unassigned queue
)

SORTABLE = {"created_at", "updated_at", "score"}
# Roles that may not read money fields: they filter and sort by the score without money rules.
MONEY_BLIND_ROLES = frozenset({"marketing"})


def score_column(principal: Principal):
    return Lead.score_public if principal.role in MONEY_BLIND_ROLES else Lead.score


class ClaimRepository:
    """Duplicate claims on leads."""

    def __init__(self, session: Session):
        self.session = session

    def by(self, lead_id: uuid.UUID, user_id: str) -> DuplicateClaim | None:
        """Someone's claim on a lead (one per person and lead)."""
        with self.session.no_autoflush:
            return self.session.execute(select(DuplicateClaim).where(
                DuplicateClaim.lead_id == lead_id, DuplicateClaim.claimed_by == user_id)).scalar_one_or_none()

    def add(self, claim: DuplicateClaim) -> None:
        self.session.add(claim)


class LeadRepository:
    """Every read goes through here, already narrowed to what the principal may see."""

    def __init__(self, session: Session, principal: Principal):
        self.session = session
        self.principal = principal

    def _scope(self):
        return select(Lead).where(Lead.deleted_at.is_(None), visible(self.principal, LEAD_VISIBILITY))

    def get(self, lead_id: uuid.UUID, *, for_update: bool = False) -> Lead | None:
        stmt = self._scope().where(Lead.id == lead_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.execute(stmt).scalar_one_or_none()

    def list(self, filters: dict, *, sort: SortSpec, limit: int, cursor: str | None):
        stmt = self._scope()
        for name in ("status", "owner_id", "team_id", "region", "industry", "source"):
            if filters.get(name) is not None:
                stmt = stmt.where(getattr(Lead, name) == filters[name])
        if filters.get("account_id") is not None:
            stmt = stmt.where(Lead.account_id == filters["account_id"])
        if filters.get("company"):
            key = keys_for({"company": filters["company"]})["company_key"]
            # A name that normalizes to nothing ("-", "(China)") matches no company, not every blank one.
            stmt = stmt.where(Lead.company_key == key) if key else stmt.where(false())
        if filters.get("min_score") is not None:
            stmt = stmt.where(score_column(self.principal) >= filters["min_score"])
        if filters.get("q"):
            needle = f"%{filters['q'].lower()}%"
            stmt = stmt.where(or_(func.lower(Lead.company).like(needle), func.lower(Lead.contact_name).like(needle),
                                  func.lower(Lead.email).like(needle), Lead.phone.like(needle)))
        return paginate(self.session, stmt, model=Lead, sort=sort, limit=limit, cursor=cursor)

    def count_by_status(self, start, end) -> dict[str, int]:
        """Visible leads created in [start, end), per status: the lead half of the funnel."""
        stmt = (select(Lead.status, func.count()).where(Lead.deleted_at.is_(None), Lead.created_at >= start,
                                                        Lead.created_at < end,
                                                        visible(self.principal, LEAD_VISIBILITY))
                .group_by(Lead.status))
        return {row[0]: row[1] for row in self.session.execute(stmt)}

    def add(self, lead: Lead) -> None:
        self.session.add(lead)
