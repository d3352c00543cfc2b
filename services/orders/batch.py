"""What one performance transaction gathers as it applies events (uow.state): the ledger rows and the
changes to their sums, written once when it commits (one multi-row insert, one upsert of the sums in
key order) rather than a few statements per event; the replicas it looked up (misses too); and the
alert watch (alerts.Watch). A consumer batch of 500 events is one transaction; gone with it."""
from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError

from crmkit.db import UnitOfWork, upsert

from .performance_db import Actual, ActualTotal, PerformanceEntry

SUM_KEY = ("user_id", "team_id", "metric", "month", "product_category", "region")
TOTAL_KEY = ("kind", "subject_id", "metric", "month")


@dataclass
class Batch:
    # Ledger rows not written yet, by what they came from: ("order", order id) for an order's,
    # (source, source id) for the rest, so taking an order's back finds them at once.
    entries: dict[tuple, list[dict]] = field(default_factory=lambda: defaultdict(list))
    sums: dict[tuple, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # changes not written yet
    looked_up: dict[tuple, object] = field(default_factory=dict)  # (model, id) -> row or None
    orders_counted: set[str] | None = None  # orders with ledger rows, when the batch looked them up at once
    watch: object | None = None  # alerts.Watch, when the transaction checks alert rules

    def change(self, row: dict, amount: Decimal) -> None:
        self.sums[tuple(row[k] for k in SUM_KEY)] += amount


def of(uow: UnitOfWork) -> Batch:
    if not isinstance(uow.state, Batch):
        b = uow.state = Batch()
        uow.before_commit(lambda: write(uow, b))
    return uow.state


def get(uow: UnitOfWork, model, key):
    """session.get, remembering misses too (an account the replica has not heard of, looked up by
    every order on it)."""
    b = of(uow)
    if (model, key) not in b.looked_up:
        b.looked_up[(model, key)] = uow.session.get(model, key)
    return b.looked_up[(model, key)]


_ids = random.Random()  # seeded from the OS once; ledger row ids need to be unique, not secret


def new_id() -> uuid.UUID:
    """A version-4 UUID without a system call per row (uuid4 reads os.urandom each time)."""
    return uuid.UUID(int=_ids.getrandbits(128), version=4)


def origin(row: dict) -> tuple:
    return (row["source"], row["order_id"]) if row["source"] == "order" else (row["source"], row["source_id"])


def preload(uow: UnitOfWork, model, keys) -> None:
    """Look up many rows at once (a batch's accounts or users): one query, misses remembered."""
    b = of(uow)
    wanted = sorted({k for k in keys if k is not None and (model, k) not in b.looked_up})
    if not wanted:
        return
    pk = model.__mapper__.primary_key[0]
    found = {getattr(row, pk.key): row for row in uow.session.execute(select(model).where(pk.in_(wanted))).scalars()}
    for k in wanted:
        b.looked_up[(model, k)] = found.get(k)  # keys of the column's type: UUIDs for accounts, text for users


def write(uow: UnitOfWork, b: Batch) -> None:
    """The batch's ledger rows, and its changes to the sums added in key order (two workers'
    transactions on the same sums then wait for each other, never deadlock). On PostgreSQL by COPY
    (the rows, and the changes into a scratch table merged with one INSERT ... ON CONFLICT): a
    row-per-statement executemany spent more than the rest of the batch did. The batch is done with:
    anything added after this commit starts a new one (with its own write)."""
    rows = [row for rows in b.entries.values() for row in rows]
    changes = sorted(b.sums.items())
    b.entries.clear()
    b.sums.clear()
    if uow.state is b:
        uow.state = None
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for (user, team, metric, month, _, _), amount in changes:
        totals[("user", user, metric, month)] += amount
        totals[("team", team, metric, month)] += amount
    total_changes = sorted(totals.items())
    if uow.session.get_bind().dialect.name == "postgresql":
        _copy(uow, rows, changes, total_changes)
        return
    if rows:
        uow.session.execute(insert(PerformanceEntry.__table__), rows)
    for table, keys, values in ((Actual.__table__, SUM_KEY, changes), (ActualTotal.__table__, TOTAL_KEY, total_changes)):
        if values:
            stmt = upsert(uow.session, table)
            stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                              set_={"amount": table.c.amount + stmt.excluded.amount})
            uow.session.execute(stmt, [dict(zip(keys, key, strict=True), amount=amount) for key, amount in values])


ENTRY_COLUMNS = ("id", "event_id", "metric", "user_id", "team_id", "month", "occurred_on", "amount",
                 "product_category", "region", "source", "source_id", "order_id")


def _copy(uow: UnitOfWork, rows: list[dict], changes: list[tuple[tuple, Decimal]],
          total_changes: list[tuple[tuple, Decimal]]) -> None:
    try:
        _copy_rows(uow, rows, changes, total_changes)
    except psycopg.OperationalError as exc:
        # The raw cursor's errors are psycopg's; the consumer tells a database outage (wait for it)
        # from a bad event (retry, then dead-letter) by SQLAlchemy's.
        raise OperationalError("copy into the ledger", None, exc) from exc


def _copy_rows(uow: UnitOfWork, rows: list[dict], changes: list[tuple[tuple, Decimal]],
               total_changes: list[tuple[tuple, Decimal]]) -> None:
    cursor = uow.session.connection().connection.driver_connection.cursor()
    with cursor:
        if rows:
            with cursor.copy(f"copy performance_entries ({', '.join(ENTRY_COLUMNS)}) from stdin") as copy:
                for row in rows:
                    copy.write_row(tuple(row[c] for c in ENTRY_COLUMNS))
        for table, keys, values in (("actuals", SUM_KEY, changes), ("actual_totals", TOTAL_KEY, total_changes)):
            if not values:
                continue
            columns = ", ".join(keys)
            cursor.execute(f"create temporary table if not exists {table}_changes "
                           f"(like {table} including defaults) on commit delete rows")
            with cursor.copy(f"copy {table}_changes ({columns}, amount) from stdin") as copy:
                for key, amount in values:
                    copy.write_row((*key, amount))
            cursor.execute(f"insert into {table} ({columns}, amount) select {columns}, amount from {table}_changes "
                           f"order by {columns} on conflict ({columns}) do update "
                           f"set amount = {table}.amount + excluded.amount")
            cursor.execute(f"delete from {table}_changes")
