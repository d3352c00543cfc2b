"""Notifications tables (SQLAlchemy 2 ORM): the inbox; the deliveries of each notification by e-mail
(one row per attempt's state, so a crash loses none and repeats at most one); the reminders kept from
follow-up dates and next contacts; each person's preferences; the replica of the directory every
service keeps (who manages whom, who is active); and the kit's outbox, processed-event and
idempotency tables."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.directory import DirectoryTeamColumns, DirectoryUserColumns
from crmkit.tables import add_kit_tables


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)


class DirectoryUser(DirectoryUserColumns, Base):
    __tablename__ = "directory_users"


class DirectoryTeam(DirectoryTeamColumns, Base):
    __tablename__ = "directory_teams"


class Notification(Base):
    """One message to one person. `source_key` names what raised it (an event id, or a reminder's
    rung): unique with the recipient and type, so an event delivered three times tells once."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    recipient_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(300))
    event_id: Mapped[str | None] = mapped_column(String(100))  # the event that raised it (none for a reminder)
    source_key: Mapped[str] = mapped_column(String(200))
    record_type: Mapped[str | None] = mapped_column(String(20))
    record_id: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # the customer it is about, for the customer view
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    read_at = mapped_column(UTCDateTime)
    __table_args__ = (
        UniqueConstraint("source_key", "recipient_id", "type", name="uq_notifications_source"),
        Index("ix_notifications_inbox", "recipient_id", "created_at", "id"),
        Index("ix_notifications_unread", "recipient_id", "read_at"),
        Index("ix_notifications_account", "account_id", "recipient_id", "created_at"),
    )


class WebhookEndpoint(Base):
    """An outside system told of notifications (admin): the URL, which notification types, and the
    signing secrets live now (several during a rotation; each with when it stops being used)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list] = mapped_column(JSON)  # notification types, or ["*"]
    secrets: Mapped[list] = mapped_column(JSON)  # [{"secret": "whsec_...", "expires_at": iso or null}]
    status: Mapped[str] = mapped_column(String(20))  # active | disabled | deleted
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (Index("ix_webhook_endpoints_status", "status"),)


class Delivery(Base):
    """A notification sent by e-mail or to a webhook endpoint: pending until sent, retried with backoff, failed when its
    attempts run out. `claimed_until` marks a send in progress: a sender that dies mid-send leaves
    it to be taken again once that time passes (the one duplicate a crash may cost)."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id"), index=True)
    # So that a notification and its deliveries go in together, the notification first, in bulk.
    notification: Mapped[Notification] = relationship(lazy="raise")
    channel: Mapped[str] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(String(2000))  # the e-mail address, or the endpoint's URL
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    payload: Mapped[str | None] = mapped_column(Text)  # a webhook's body, the same at every attempt
    status: Mapped[str] = mapped_column(String(20))  # pending | sent | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    claimed_until = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(40))  # the sender holding the claim
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_deliveries_due", "status", "next_attempt_at"),)


class Reminder(Base):
    """A date someone must act by on a record (a lead's follow-up, a next contact on a lead, account
    or deal, a planned visit, a day's report), and how far up its ladder it has gone. Closed when the record is worked, closed or
    deleted; moved with the record to its new owner."""

    __tablename__ = "reminders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    record_type: Mapped[str] = mapped_column(String(20))  # lead | account | opportunity | visit | daily_report
    record_id: Mapped[str] = mapped_column(String(64))  # a daily report's: "{owner}/{day}"
    kind: Mapped[str] = mapped_column(String(20))  # follow_up | next_contact | visit | daily_report
    title: Mapped[str] = mapped_column(String(300))  # what the record is called (a company, an account)
    account_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True)
    team_id: Mapped[str | None] = mapped_column(String(64))
    due_at = mapped_column(UTCDateTime, nullable=False)
    # The rungs count from here: the due time, or when a new owner was given it after that time.
    ladder_start = mapped_column(UTCDateTime, nullable=False)
    rung: Mapped[int] = mapped_column(Integer, default=0)  # the ladder's next rung to fire
    next_at = mapped_column(UTCDateTime)  # when that rung fires; null once the ladder is done
    status: Mapped[str] = mapped_column(String(20))  # open | done | cancelled
    as_of = mapped_column(UTCDateTime, nullable=False)  # the time of the event that last changed it
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    __table_args__ = (
        UniqueConstraint("record_type", "record_id", "kind", name="uq_reminders_record"),
        Index("ix_reminders_next", "status", "next_at"),
        Index("ix_reminders_owner_due", "owner_id", "due_at"),
    )


class Preference(Base):
    """How a person wants to be told: channels per notification type, quiet hours, a daily digest,
    their address, language and time zone. Absent: the defaults (notifications.preferences)."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(8))
    time_zone: Mapped[str] = mapped_column(String(64))
    channels: Mapped[dict] = mapped_column(JSON)  # type -> ["inapp", "email", ...]
    quiet_hours: Mapped[dict | None] = mapped_column(JSON)  # {"start": "22:00", "end": "07:00"}
    digest: Mapped[bool] = mapped_column(Boolean, default=False)
    agenda_email: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class WaitingApproval(Base):
    """An approval waiting for someone's decision, kept from approval.* events for the agenda."""

    __tablename__ = "waiting_approvals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # the approval's
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    order_number: Mapped[str] = mapped_column(String(40))
    approver_id: Mapped[str | None] = mapped_column(String(64), index=True)  # null: any executive
    level: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    since = mapped_column(UTCDateTime, nullable=False)
    as_of = mapped_column(UTCDateTime, nullable=False)


class AgendaRun(Base):
    """The morning agenda e-mail sent to a person for a local day: at most once each."""

    __tablename__ = "agenda_runs"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[dt.date] = mapped_column(primary_key=True)
    sent_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
