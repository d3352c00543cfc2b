"""Orders tables (SQLAlchemy 2 ORM): the product catalogue so far, the replicas of accounts (from
crm.opportunities.v1) and of the directory that every service keeps, and the kit's outbox,
processed-event and idempotency tables."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, Integer, Numeric, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from crmkit.db import UTCDateTime, new_metadata, utcnow
from crmkit.directory import CompletedHandoverColumns, DirectoryTeamColumns, DirectoryUserColumns
from crmkit.tables import add_kit_tables


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
