"""Orders tables (SQLAlchemy 2 ORM): the product catalogue; orders with their lines, payments,
instalments and history; order types; the approval policy and the approvals it opened; the replicas
of accounts (from crm.opportunities.v1) and of the directory that every service keeps; and the kit's
outbox, processed-event and idempotency tables."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    Uuid,
    false,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.sql import ColumnElement

from crmkit.auth import Principal
from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.directory import CompletedHandoverColumns, DirectoryTeamColumns, DirectoryUserColumns
from crmkit.tables import add_kit_tables
from crmkit.visibility import VisibilityRule, visible


class Base(DeclarativeBase):
    metadata = new_metadata()


KIT_TABLES = add_kit_tables(Base.metadata)
Money = Numeric(14, 2)


class Product(Base):
    """A catalogue entry. Orders name products by SKU, so a SKU never changes once created, and a
    product is deactivated rather than deleted (old orders still name it)."""

    __tablename__ = "products"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(100))  # the product line
    list_price: Mapped[Decimal] = mapped_column(Money)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Sales of it do not count toward quota (order types and house accounts are the other two reasons).
    excluded_from_quota: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_products_created", "created_at", "id"),
        Index("ix_products_category", "category", "created_at", "id"),
    )


class AccountReplica(Base):
    """What the orders service knows of an account (owned by the opportunities service), from its
    account.* events: enough to place an order on it and to tell who may see that order (its owner,
    team and virtual team). `version` is the account's: an older event arriving late changes nothing."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[str | None] = mapped_column(String(64), index=True)
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    # This service's own fact about the account, which account events never overwrite: a house
    # account's orders do not count toward the quota of the rep who only follows it up.
    house_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    region: Mapped[str | None] = mapped_column(String(100))  # sales by region, targets narrowed to one


class AccountMemberReplica(Base):
    """The account's virtual team (tech and after-sales staff see the orders of accounts that list
    them): a row per member, so visibility is an indexed join, not a search through JSON."""

    __tablename__ = "account_members"

    account_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("accounts.id", ondelete="CASCADE"),
                                                  primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(30))
    __table_args__ = (Index("ix_account_members_user", "user_id", "account_id"),)


class DirectoryUser(DirectoryUserColumns, Base):
    pass


class DirectoryTeam(DirectoryTeamColumns, Base):
    pass


class CompletedHandover(CompletedHandoverColumns, Base):
    pass


# ---- orders -----------------------------------------------------------------------------------------
class Order(Base):
    """A sales order on an account. Totals, margin, collected and outstanding are kept by the server
    from the lines and payments, never taken from a client."""

    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    number: Mapped[str] = mapped_column(String(20), unique=True)  # SO-2026-000123
    account_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    # The deal it came from; unique, so a won deal becomes one order however often its event arrives.
    opportunity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, unique=True)
    duplicated_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    owner_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    # Who the order was credited to when it was confirmed: a handover moves the open order, not the credit.
    credited_to: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(40))
    counts_toward_quota: Mapped[bool] = mapped_column(Boolean)
    quota_reason: Mapped[str] = mapped_column(String(300))
    counted_total: Mapped[Decimal] = mapped_column(Money)  # the part of the total that counts toward quota
    total: Mapped[Decimal] = mapped_column(Money)
    cost: Mapped[Decimal | None] = mapped_column(Money)  # None when any line's cost is unknown
    collected: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    delivery_date: Mapped[dt.date | None] = mapped_column(Date)
    payment_terms_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    notes: Mapped[str | None] = mapped_column(Text)
    rejection_reason: Mapped[str | None] = mapped_column(String(2000))
    # The commercial terms an approval was granted for (domain.terms_fingerprint): confirming checks
    # the order still has them, so no path can confirm terms nobody approved.
    approved_terms: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_orders_created", "created_at", "id"),
        Index("ix_orders_owner", "owner_id", "created_at", "id"),
        Index("ix_orders_team", "team_id", "created_at", "id"),
        Index("ix_orders_account", "account_id", "created_at", "id"),
        Index("ix_orders_status", "status", "created_at", "id"),
    )

    @property
    def gross_margin(self) -> Decimal | None:
        return None if self.cost is None else self.total - self.cost

    @property
    def outstanding(self) -> Decimal:
        return self.total - self.collected


class OrderLine(Base):
    """A line as sold: the product's name, list price and cost are copied at the time (a later price
    change does not rewrite an order)."""

    __tablename__ = "order_lines"

    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(100))
    qty: Mapped[int] = mapped_column(Integer)
    list_price: Mapped[Decimal] = mapped_column(Money)
    unit_price: Mapped[Decimal] = mapped_column(Money)
    discount_pct: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    line_total: Mapped[Decimal] = mapped_column(Money)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    excluded_from_quota: Mapped[bool] = mapped_column(Boolean)


class OrderCounter(Base):
    """How many orders a year has: locked and bumped in the creating transaction, so no two orders
    share a number. The number shown is the count permuted under the year's own random key
    (domain.order_number_code), so it does not tell how many orders others placed."""

    __tablename__ = "order_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64))  # hex; made at random with the year's first order


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    amount: Mapped[Decimal] = mapped_column(Money)
    paid_on: Mapped[dt.date] = mapped_column(Date)
    reference: Mapped[str | None] = mapped_column(String(200))
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Instalment(Base):
    """The payment plan: what is due when. Payments are matched to instalments oldest first."""

    __tablename__ = "instalments"

    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    due_on: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Money)


class OrderHistory(Base):
    """What happened to an order, who did it and when: submissions, every approval decision with its
    comment, confirmations, payments. Rows are only ever added."""

    __tablename__ = "order_history"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id", ondelete="CASCADE"))
    at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[dict] = mapped_column(JSON)
    __table_args__ = (Index("ix_order_history_order", "order_id", "at"),)


class OrderType(Base):
    """A kind of order (standard, sample, repeat...) and whether it counts toward quota: data an
    admin edits, seeded by the migration."""

    __tablename__ = "order_types"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    counts_toward_quota: Mapped[bool] = mapped_column(Boolean)
    position: Mapped[int] = mapped_column(Integer)


# ---- approvals --------------------------------------------------------------------------------------
class VersionedDocumentColumns:
    """A settings document kept whole, by name, versioned: PUT needs If-Match, so two people cannot
    overwrite each other's settings unseen (documents.py reads and writes them)."""

    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    document: Mapped[dict] = mapped_column(JSON)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    updated_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict:  # noqa: N805 - a class-level directive
        return {"version_id_col": cls.version}


class ApprovalPolicy(VersionedDocumentColumns, Base):
    """The one approval policy document (rules, limits per level, escalation time)."""

    __tablename__ = "approval_policies"


class Approval(Base):
    """An approval request: the rules an order's terms tripped and the chain of people who must
    decide, in order. It is for one set of terms (`terms`): changing them closes it as superseded."""

    __tablename__ = "approvals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    order_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("orders.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))  # pending | approved | rejected | superseded | cancelled
    terms: Mapped[str] = mapped_column(String(64))
    reasons: Mapped[list] = mapped_column(JSON)  # the rules tripped, with the order's values
    requested_by: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[int] = mapped_column(Integer)
    current_step: Mapped[int | None] = mapped_column(Integer)
    # Who must act now (None: any executive) and since when: the queue and escalation read these.
    current_approver: Mapped[str | None] = mapped_column(String(64))
    current_level: Mapped[str | None] = mapped_column(String(20))
    waiting_since = mapped_column(UTCDateTime, nullable=True)
    created_at = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    closed_at = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_approvals_order", "order_id", "created_at"),
        Index("ix_approvals_queue", "status", "current_approver", "created_at", "id"),
        Index("ix_approvals_waiting", "status", "waiting_since"),
    )


class ApprovalStep(Base):
    __tablename__ = "approval_steps"

    approval_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("approvals.id", ondelete="CASCADE"),
                                                   primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    level: Mapped[str] = mapped_column(String(20))  # manager | parent_manager | executive
    approver_id: Mapped[str | None] = mapped_column(String(64))  # None: any executive
    status: Mapped[str] = mapped_column(String(20))  # waiting | pending | approved | rejected | escalated | closed
    escalated_from: Mapped[str | None] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at = mapped_column(UTCDateTime, nullable=True)
    comment: Mapped[str | None] = mapped_column(String(2000))


# ---- visibility -------------------------------------------------------------------------------------
def _on_account_team(user_id: str) -> ColumnElement:
    # Tech and after-sales staff see the orders of accounts whose virtual team lists them.
    return Order.account_id.in_(select(AccountMemberReplica.account_id).where(AccountMemberReplica.user_id == user_id))


ORDER_VISIBILITY = VisibilityRule(owner_column=Order.owner_id, team_column=Order.team_id,
                                  member_condition=_on_account_team)


def order_visible(principal: Principal) -> ColumnElement:
    return visible(principal, ORDER_VISIBILITY)


# The performance tables are in performance_db.py (issue 16); imported here so that this metadata,
# which migrations are checked against, holds them too.
from . import performance_db  # noqa: E402,F401
