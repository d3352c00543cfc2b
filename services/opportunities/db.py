"""Opportunities tables (SQLAlchemy 2 ORM) and the repositories that put row visibility into every
query (CONTRACT §2)."""
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
    Numeric,
    String,
    Text,
    Uuid,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql import ColumnElement

from crmkit.auth import Principal
from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.directory import CompletedHandoverColumns, DirectoryTeamColumns, DirectoryUserColumns
from crmkit.pagination import SortSpec, paginate
from crmkit.tables import add_kit_tables
from crmkit.visibility import SEES_EVERYTHING, VisibilityRule, visible


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)
Money = Numeric(14, 2)


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


# ---- the rep's day: visit plans, daily reports, and what other services tell of it -------------------
class Visit(Base):
    """A visit or call a rep plans on an account or a lead (CONTRACT §4 visit plans): planned, then done
    (checked in), missed or rescheduled (the new time is a visit of its own, `rescheduled_to`)."""

    __tablename__ = "visits"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("accounts.id"))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    contact_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(10))  # visit | call
    planned_at = mapped_column(UTCDateTime, nullable=False)
    day: Mapped[dt.date] = mapped_column(Date)  # planned_at's day where the company works (CRM_TIME_ZONE)
    purpose: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))
    checked_in_at = mapped_column(UTCDateTime, nullable=True)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(500))
    outcome: Mapped[str | None] = mapped_column(Text)
    next_contact_at = mapped_column(UTCDateTime, nullable=True)
    activity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Seconds from the check-in to the rep's next stage move or order on the account (visit_progress.py).
    followed_after: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)  # why missed or rescheduled
    rescheduled_to: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    rescheduled_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_visits_owner_day", "owner_id", "day", "planned_at"),
        Index("ix_visits_team_day", "team_id", "day"),
        Index("ix_visits_day_status", "day", "status"),
        Index("ix_visits_account", "account_id"),
        Index("ix_visits_owner_account_checked_in", "owner_id", "account_id", "checked_in_at"),
    )


class DailyReport(Base):
    """One rep's report of one day: drafted from the day's records until submitted, when the draft is
    frozen into `summary`; then only comments and the review change it."""

    __tablename__ = "daily_reports"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    day: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))  # draft | submitted | reviewed
    notes: Mapped[str | None] = mapped_column(Text)
    market: Mapped[list] = mapped_column(JSON, default=list)
    summary: Mapped[dict | None] = mapped_column(JSON)  # the draft as submitted
    submitted_at = mapped_column(UTCDateTime, nullable=True)
    reviewed_at = mapped_column(UTCDateTime, nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ux_daily_reports_owner_day", "owner_id", "day", unique=True),
        Index("ix_daily_reports_team_day", "team_id", "day"),
        Index("ix_daily_reports_day", "day"),
    )


class ReportComment(Base):
    __tablename__ = "daily_report_comments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    report_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("daily_reports.id"), index=True)
    author_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class MarketNote(Base):
    """A market-situation entry of a submitted report, kept apart so it can be searched (GET /market-notes)."""

    __tablename__ = "market_notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    report_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("daily_reports.id"), index=True)
    owner_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    day: Mapped[dt.date] = mapped_column(Date)
    position: Mapped[int] = mapped_column(Integer)
    competitor: Mapped[str | None] = mapped_column(String(200))
    competitor_key: Mapped[str | None] = mapped_column(String(200))  # lower-cased, for the search
    product_category: Mapped[str | None] = mapped_column(String(100))
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    region: Mapped[str | None] = mapped_column(String(100))  # the tagged account's, when submitted
    price_heard: Mapped[Decimal | None] = mapped_column(Money)
    note: Mapped[str | None] = mapped_column(Text)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)  # when the report was submitted
    __table_args__ = (
        Index("ix_market_notes_competitor_day", "competitor_key", "day"),
        Index("ix_market_notes_category_day", "product_category", "day"),
        Index("ix_market_notes_created", "created_at", "id"),
    )


class KnownLead(Base):
    """What this service knows of a lead from crm.leads.v1: enough to plan a visit to it (who may) and
    to count the day's new leads by source. The leads service owns the lead."""

    __tablename__ = "known_leads"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    company: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer)  # the lead's: an older event changes nothing
    created_at = mapped_column(UTCDateTime, nullable=False)
    __table_args__ = (Index("ix_known_leads_owner_created", "owner_id", "created_at"),
                      Index("ix_known_leads_team_created", "team_id", "created_at"))


class LeadActivity(Base):
    """An activity logged on a lead (crm.leads.v1 activity.logged), by whom and when: the day's calls."""

    __tablename__ = "lead_activities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    lead_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(20))
    logged_by: Mapped[str | None] = mapped_column(String(64))
    occurred_at = mapped_column(UTCDateTime, nullable=False)
    __table_args__ = (Index("ix_lead_activities_by_occurred", "logged_by", "occurred_at"),)


class OrderFact(Base):
    """An order as crm.orders.v1 tells it: confirmed when, for how much, credited to whom."""

    __tablename__ = "order_facts"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[Decimal] = mapped_column(Money)
    confirmed_at = mapped_column(UTCDateTime, nullable=True)
    cancelled_at = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (Index("ix_order_facts_owner_confirmed", "owner_id", "confirmed_at"),
                      Index("ix_order_facts_team_confirmed", "team_id", "confirmed_at"),
                      Index("ix_order_facts_owner_account", "owner_id", "account_id", "confirmed_at"))


class PaymentFact(Base):
    """A payment recorded on an order (order.payment_recorded): the money collected, on the day paid."""

    __tablename__ = "payment_facts"

    payment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money)
    paid_on: Mapped[dt.date] = mapped_column(Date)
    __table_args__ = (Index("ix_payment_facts_owner_paid", "owner_id", "paid_on"),
                      Index("ix_payment_facts_team_paid", "team_id", "paid_on"))


class AttainmentSnapshot(Base):
    """A subject's attainment of a target as it stood at the end of a day (crm.orders.v1
    performance.attainment): weekly progress shows the last of each week. Targets stay in orders."""

    __tablename__ = "attainment_snapshots"

    subject_type: Mapped[str] = mapped_column(String(10), primary_key=True)  # user | team
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    target: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    actual: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    attainment: Mapped[Decimal] = mapped_column(Numeric(14, 1))
    # A person's actual by the team the credit was earned in, {team id or "": amount as text}.
    by_team: Mapped[dict | None] = mapped_column(JSON)
    __table_args__ = (Index("ix_attainment_snapshots_type_day", "subject_type", "day"),)


class StageMove(Base):
    """A deal's move to another stage, won or lost: the day's stage moves, and whether a visit was
    followed by one (visit effectiveness)."""

    __tablename__ = "stage_moves"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    from_stage: Mapped[str] = mapped_column(String(40))
    to_stage: Mapped[str] = mapped_column(String(40))
    moved_at = mapped_column(UTCDateTime, nullable=False)
    __table_args__ = (Index("ix_stage_moves_owner_moved", "owner_id", "moved_at"),
                      Index("ix_stage_moves_team_moved", "team_id", "moved_at"),
                      Index("ix_stage_moves_owner_account", "owner_id", "account_id", "moved_at"))


class PipelineChange(Base):
    """A change of an owner's open pipeline (a deal opened, re-priced, closed, deleted or handed over),
    so the pipeline's change over any week is a sum rather than a guess."""

    __tablename__ = "pipeline_changes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    delta: Mapped[Decimal] = mapped_column(Money)
    changed_at = mapped_column(UTCDateTime, nullable=False)
    __table_args__ = (Index("ix_pipeline_changes_owner_changed", "owner_id", "changed_at"),
                      Index("ix_pipeline_changes_team_changed", "team_id", "changed_at"))


class PipelinePosition(Base):
    """What each deal adds to its owner's open pipeline now, as last recorded in pipeline_changes."""

    __tablename__ = "pipeline_positions"

    opportunity_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Money)


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


VISIT_VISIBILITY = VisibilityRule(owner_column=Visit.owner_id, team_column=Visit.team_id)
REPORT_VISIBILITY = VisibilityRule(owner_column=DailyReport.owner_id, team_column=DailyReport.team_id)
MARKET_NOTE_VISIBILITY = VisibilityRule(owner_column=MarketNote.owner_id, team_column=MarketNote.team_id)
# As the leads service has it (marketing aside, who plans no visits): managers see the unassigned queue.
LEAD_VISIBILITY = VisibilityRule(owner_column=KnownLead.owner_id, team_column=KnownLead.team_id,
                                 managers_see_unowned=True)


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
