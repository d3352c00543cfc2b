"""Actuals kept current from events (issue 16), not recomputed by scanning on each read: each event
adds its contributions to the ledger (PerformanceEntry, traceable to the order, payment, account or
activity) and to the sums performance reads (Actual), in one transaction; the consumer applies each
event once (by id). Only orders that count toward quota count, and only their counted lines.

Credit goes to whom the order was credited when confirmed (`credited_to`), in the team it had then;
a handover moves the open order, not the credit. A re-confirmed order (its terms changed and were
approved again) replaces its contribution; one that goes back to approval, or is cancelled, takes
it back."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from marshmallow import EXCLUDE, Schema, ValidationError, fields
from sqlalchemy import delete, select

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork
from crmkit.settings import Settings

from . import alerts, batch
from .db import AccountReplica, DirectoryUser
from .performance_db import PerformanceEntry
from .scorecard import local_day, time_zone  # noqa: F401 - time_zone: the tests' month


class _Part(Schema):
    class Meta:
        unknown = EXCLUDE


class _Line(_Part):
    category = fields.String(required=True, allow_none=True)
    qty = fields.Integer(required=True)
    line_total = fields.Decimal(required=True)
    unit_cost = fields.Decimal(required=True, allow_none=True)
    excluded_from_quota = fields.Boolean(required=True)


class _Order(_Part):
    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    credited_to = fields.String(required=True, allow_none=True)
    counts_toward_quota = fields.Boolean(required=True)
    status = fields.String(required=True)
    lines = fields.List(fields.Nested(_Line), required=True)


class _Payment(_Part):
    id = fields.UUID(required=True)
    amount = fields.Decimal(required=True)
    paid_on = fields.Date(required=True)


class _Account(_Part):
    id = fields.UUID(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    region = fields.String(load_default=None, allow_none=True)
    created_at = fields.AwareDateTime(required=True)


def _load(schema: Schema, envelope: dict, key: str) -> dict:
    try:
        return schema.load(((envelope.get("data") or {}).get(key)) or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope['type']}: {exc.messages}") from None


def _time(envelope: dict) -> dt.datetime:
    """The event's time: parsed already by the consumer (crmkit.events.parse_envelope), or as
    written, when a test hands the envelope over itself."""
    moment = envelope.get("time")
    if isinstance(moment, dt.datetime):
        return moment
    try:
        return dt.datetime.fromisoformat(moment)
    except (TypeError, ValueError):
        raise Reject(f"{envelope.get('type')} without a valid time") from None


# ---- the ledger and its sums ------------------------------------------------------------------------------
def add(uow: UnitOfWork, rows: list[dict]) -> None:
    """Contributions join the figures: kept in the transaction's batch and written when it commits."""
    if not rows:
        return
    b = batch.of(uow)
    for r in rows:
        b.entries[batch.origin(r)].append({"id": batch.new_id(), **r})
        b.change(r, r["amount"])
    alerts.changed(uow, rows, +1)


def take_back(uow: UnitOfWork, source: str, *, order_id: str | None = None, source_id: str | None = None
              ) -> dt.date | None:
    """Contributions leave the figures: an order's (not its payments: money collected stays
    collected), or one account's. Returns the day they had counted on, if any."""
    b = batch.of(uow)
    gone = b.entries.pop((source, order_id if order_id is not None else source_id), [])
    if order_id is None or b.orders_counted is None or order_id in b.orders_counted:
        stmt = select(PerformanceEntry).where(PerformanceEntry.source == source)
        stmt = stmt.where(PerformanceEntry.order_id == order_id) if order_id is not None else \
            stmt.where(PerformanceEntry.source_id == source_id)
        stored = uow.session.execute(stmt).scalars().all()
        if stored:
            uow.session.execute(delete(PerformanceEntry).where(PerformanceEntry.id.in_([e.id for e in stored])))
            gone += [{c: getattr(e, c) for c in (*batch.SUM_KEY, "amount", "occurred_on")} for e in stored]
    if not gone:
        return None
    for e in gone:
        b.change(e, -e["amount"])
    alerts.changed(uow, gone, -1)
    return min(e["occurred_on"] for e in gone)


def prepare_orders(uow: UnitOfWork, envelopes: list[dict]) -> None:
    """Before a batch of order events, in one query each: which of its orders have counted already
    (most have not, and then a confirmation takes nothing back without asking), and its accounts."""
    orders = [o for o in ((e.get("data") or {}).get("order") for e in envelopes) if isinstance(o, dict)]
    b = batch.of(uow)
    b.orders_counted = set(uow.session.execute(select(PerformanceEntry.order_id).where(
        PerformanceEntry.order_id.in_(sorted({str(i) for i in map(_uuid, (o.get("id") for o in orders)) if i}))
    ).distinct()).scalars())
    batch.preload(uow, AccountReplica, {_uuid(o.get("account_id")) for o in orders})


def prepare_activities(uow: UnitOfWork, envelopes: list[dict]) -> None:
    """Before a batch of activities (and accounts): the people who logged them, in one query."""
    users = {e.get("actor") for e in envelopes} | {(e.get("data") or {}).get("logged_by") for e in envelopes}
    batch.preload(uow, DirectoryUser, {u for u in users if isinstance(u, str)})


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def take_back_order(uow: UnitOfWork, order_id: str) -> dt.date | None:
    return take_back(uow, "order", order_id=order_id)


def _entry(envelope: dict, metric: str, user: str, team: str | None, day: dt.date, amount: Decimal, *,
           source: str, source_id, order_id=None, category: str | None = None, region: str | None = None) -> dict:
    return {"event_id": envelope["id"], "metric": metric, "user_id": user, "team_id": team or "",
            "month": f"{day.year}-{day.month:02d}", "occurred_on": day, "amount": amount,
            "product_category": category or "", "region": region or "", "source": source,
            "source_id": str(source_id), "order_id": None if order_id is None else str(order_id)}


def _region(uow: UnitOfWork, account_id) -> str | None:
    account = batch.get(uow, AccountReplica, account_id)
    return account.region if account is not None else None


# ---- handlers -----------------------------------------------------------------------------------------
def order_confirmed(uow: UnitOfWork, envelope: dict) -> None:
    order = _load(SCHEMAS['_Order'], envelope, "order")
    # A re-confirmation (the terms changed, and needed no new approval) replaces what the order gave
    # before, on the day it first counted: an edit does not move revenue into another month.
    counted_on = take_back_order(uow, str(order["id"]))
    user = order["credited_to"] or order["owner_id"]
    if not order["counts_toward_quota"] or not user:
        return
    day, region = counted_on or local_day(_time(envelope)), _region(uow, order["account_id"])
    common = {"source": "order", "source_id": order["id"], "order_id": order["id"], "region": region}
    rows = [_entry(envelope, "orders", user, order["team_id"], day, Decimal(1), **common)]
    for line in order["lines"]:
        if line["excluded_from_quota"]:
            continue
        rows.append(_entry(envelope, "revenue", user, order["team_id"], day, line["line_total"],
                           category=line["category"], **common))
        if line["unit_cost"] is not None:
            rows.append(_entry(envelope, "gross_margin", user, order["team_id"], day,
                               line["line_total"] - line["unit_cost"] * line["qty"], category=line["category"],
                               **common))
    add(uow, rows)


def order_withdrawn(uow: UnitOfWork, envelope: dict) -> None:
    """order.cancelled, or order.submitted of an order now waiting for approval again: its
    contribution waits (or goes) with it."""
    order = _load(SCHEMAS['_Order'], envelope, "order")
    if envelope["type"] == "order.cancelled" or order["status"] != "confirmed":
        take_back_order(uow, str(order["id"]))


def payment_recorded(uow: UnitOfWork, envelope: dict) -> None:
    order = _load(SCHEMAS['_Order'], envelope, "order")
    payment = _load(SCHEMAS['_Payment'], envelope, "payment")
    user = order["credited_to"] or order["owner_id"]
    if not order["counts_toward_quota"] or not user:
        return
    add(uow, [_entry(envelope, "collections", user, order["team_id"], payment["paid_on"], payment["amount"],
                     source="payment", source_id=payment["id"], order_id=order["id"],
                     region=_region(uow, order["account_id"]))])


def account_created(uow: UnitOfWork, envelope: dict) -> None:
    account = _load(SCHEMAS['_Account'], envelope, "account")
    if not account["owner_id"]:
        return
    add(uow, [_entry(envelope, "new_accounts", account["owner_id"], account["team_id"],
                     local_day(account["created_at"]), Decimal(1), source="account", source_id=account["id"],
                     region=account["region"])])


def account_deleted(uow: UnitOfWork, envelope: dict) -> None:
    """An account created and deleted is no new customer: its count goes."""
    account = _load(SCHEMAS['_Account'], envelope, "account")
    take_back(uow, "account", source_id=str(account["id"]))


# What counts as an activity toward performance: meeting customers, not notes or e-mails.
COUNTED_ACTIVITIES = frozenset({"call", "visit", "meeting", "demo"})


def _activity(uow: UnitOfWork, envelope: dict, user: str | None, activity_id, kind: str) -> None:
    """Counted on the day it was logged (the event's time), not the day the client says it happened:
    a date typed into the form cannot move it into another month."""
    if not user or kind not in COUNTED_ACTIVITIES:
        return
    person = batch.get(uow, DirectoryUser, user)
    add(uow, [_entry(envelope, "activities", user, person.team_id if person else None, local_day(_time(envelope)),
                     Decimal(1), source="activity", source_id=activity_id)])


class _DealActivity(_Part):
    activity_id = fields.UUID(required=True)
    kind = fields.String(required=True)
    logged_by = fields.String(required=True)


class _LeadActivity(_Part):
    activity_id = fields.UUID(required=True)
    kind = fields.String(required=True)


def deal_activity_logged(uow: UnitOfWork, envelope: dict) -> None:
    try:
        activity = SCHEMAS['_DealActivity'].load(envelope.get("data") or {})
    except ValidationError as exc:
        raise Reject(f"invalid activity.logged: {exc.messages}") from None
    _activity(uow, envelope, activity["logged_by"], activity["activity_id"], activity["kind"])


def lead_activity_logged(uow: UnitOfWork, envelope: dict) -> None:
    try:
        activity = SCHEMAS['_LeadActivity'].load(envelope.get("data") or {})
    except ValidationError as exc:
        raise Reject(f"invalid activity.logged: {exc.messages}") from None
    _activity(uow, envelope, envelope.get("actor"), activity["activity_id"], activity["kind"])


# One instance of each, made once: building a schema costs more than loading an event with it.
SCHEMAS = {schema.__name__: schema() for schema in (_Order, _Payment, _Account, _DealActivity, _LeadActivity)}


# The dispatch tables, by topic.
ORDER_EVENTS = {("order.confirmed", 1): order_confirmed, ("order.cancelled", 1): order_withdrawn,
                ("order.submitted", 1): order_withdrawn, ("order.payment_recorded", 1): payment_recorded}
DEAL_EVENTS = {("account.created", 1): account_created, ("account.deleted", 1): account_deleted,
               ("activity.logged", 1): deal_activity_logged}
LEAD_EVENTS = {("activity.logged", 1): lead_activity_logged}


def handlers(settings: Settings) -> tuple[dict, dict, dict]:
    """The worker's tables (orders, deals, leads): the same handlers, each in a transaction that
    checks the alert rules its changes touch (alerts.watch)."""
    def watching(handler):
        def run(uow: UnitOfWork, envelope: dict) -> None:
            alerts.watch(uow, settings)
            handler(uow, envelope)
        return run
    return tuple({key: watching(h) for key, h in table.items()} for table in (ORDER_EVENTS, DEAL_EVENTS, LEAD_EVENTS))
