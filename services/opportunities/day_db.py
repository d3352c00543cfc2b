"""The rep's day (issue 18): visit plans, daily reports and their market notes, and what this service
keeps of what a day holds elsewhere (leads, lead activities, orders, payments, attainment) and of its
own deals' history (stage moves, open-pipeline changes), with the row visibility of each. The
accounts and deals themselves are in db.py."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import JSON, Date, Float, ForeignKey, Index, Integer, Numeric, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from crmkit.db import UTCDateTime, utcnow
from crmkit.visibility import VisibilityRule

from .base import Base, Money


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


# ---- visibility -------------------------------------------------------------------------------------
VISIT_VISIBILITY = VisibilityRule(owner_column=Visit.owner_id, team_column=Visit.team_id)
REPORT_VISIBILITY = VisibilityRule(owner_column=DailyReport.owner_id, team_column=DailyReport.team_id)
MARKET_NOTE_VISIBILITY = VisibilityRule(owner_column=MarketNote.owner_id, team_column=MarketNote.team_id)
# As the leads service has it (marketing aside, who plans no visits): managers see the unassigned queue.
LEAD_VISIBILITY = VisibilityRule(owner_column=KnownLead.owner_id, team_column=KnownLead.team_id,
                                 managers_see_unowned=True)
