"""Performance tables (issue 16): targets, the ledger of contributions, its sums, the KPI scheme. On
the orders service's one metadata (db.Base), which imports this module."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import JSON, Date, Index, Integer, Numeric, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from crmkit.db import UTCDateTime, utcnow

from .db import Base, VersionedDocumentColumns


class Target(Base):
    """A target for a user or a team, for a month, quarter or year, optionally narrowed to a product
    line or region; a quarter's or year's spread over its months by `distribution` (even when null)."""

    __tablename__ = "targets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    subject_type: Mapped[str] = mapped_column(String(10))  # user | team
    subject_id: Mapped[str] = mapped_column(String(64))
    # The team whose managers set and see it: the team itself, or the user's team when it was set.
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)
    period: Mapped[str] = mapped_column(String(7))
    metric: Mapped[str] = mapped_column(String(20))
    value: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    product_category: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    # One target per subject, period, metric and narrowing (NULLs are never equal in a unique index,
    # so the narrowing is also kept as one string).
    scope: Mapped[str] = mapped_column(String(210))
    distribution: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        UniqueConstraint("subject_type", "subject_id", "period", "metric", "scope"),
        Index("ix_targets_subject", "subject_id", "period"),
        Index("ix_targets_created", "created_at", "id"),
    )


class PerformanceEntry(Base):
    """One contribution to a figure, from one event: which order, payment, account or activity made
    it, credited to whom. Rows are added, and taken back when an order is cancelled or re-confirmed."""

    __tablename__ = "performance_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    event_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str] = mapped_column(String(64))  # "" when none
    month: Mapped[str] = mapped_column(String(7))
    occurred_on: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    product_category: Mapped[str] = mapped_column(String(100))  # "" when none
    region: Mapped[str] = mapped_column(String(100))  # "" when none
    source: Mapped[str] = mapped_column(String(20))  # order | payment | account | activity
    source_id: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        Index("ix_performance_entries_user", "user_id", "month", "metric"),
        Index("ix_performance_entries_team", "team_id", "month", "metric"),
        Index("ix_performance_entries_order", "order_id"),
    )


class Actual(Base):
    """The ledger summed per user, team, metric, month, product line and region, kept in the same
    transaction as the entries: what performance reads, a handful of rows per figure."""

    __tablename__ = "actuals"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    product_category: Mapped[str] = mapped_column(String(100), primary_key=True)
    region: Mapped[str] = mapped_column(String(100), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(16, 2))
    __table_args__ = (Index("ix_actuals_team", "team_id", "metric", "month"),)


class ActualTotal(Base):
    """The same sums per person, and per team the credit was earned in, by metric and month only:
    what the alert checks read for a batch's people and teams, a few rows each, where the sums
    above hold a row per product line and region."""

    __tablename__ = "actual_totals"

    kind: Mapped[str] = mapped_column(String(4), primary_key=True)  # user | team
    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(16, 2))


class PerformanceDocument(VersionedDocumentColumns, Base):
    """A versioned settings document of performance, by name: `kpi` (the KPI scheme), `commission`
    (the commission plans), `alerts` (the alert rules)."""

    __tablename__ = "performance_documents"


class AlertFiring(Base):
    """An alert raised: the persisted record that makes each rule fire once per subject and period,
    whoever raises it (the daily schedule, a replay of it after a restart, or an event's update)."""

    __tablename__ = "alert_firings"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    rule: Mapped[str] = mapped_column(String(60))  # its name when it fired
    # What the rule asks (kind, metric, period kind, threshold or day and pace), hashed: renaming a
    # rule does not fire it again; changing its condition makes a new rule, which may fire.
    condition: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))  # target_reached | pace
    subject_type: Mapped[str] = mapped_column(String(10))
    subject_id: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(20))
    period: Mapped[str] = mapped_column(String(7))
    attainment: Mapped[Decimal | None] = mapped_column(Numeric(16, 1))  # capped (alerts.ATTAINMENT_CAP)
    fired_on: Mapped[dt.date] = mapped_column(Date)
    fired_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    __table_args__ = (UniqueConstraint("condition", "subject_type", "subject_id", "period"),)


class ScheduleRun(Base):
    """The last day a daily schedule ran for: after a restart it runs the days it missed, and only those."""

    __tablename__ = "schedule_runs"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_day: Mapped[dt.date] = mapped_column(Date)
    ran_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
