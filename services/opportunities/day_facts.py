"""What a rep's day holds beyond this service's own tables, learnt from the other services' events
(crm.leads.v1: leads and their activities; crm.orders.v1: confirmed orders, payments and daily
attainment of targets), and the two histories this service keeps of its own deals (stage moves, and
the open pipeline's changes).
Daily reports and weekly progress read these; nothing here is shown on its own.

Each handler is idempotent beyond the consumer's bookkeeping: rows are keyed by the other
service's ids, and an older version of a lead changes nothing."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow
from crmkit.fields import Money, Text

from . import visit_progress
from .day_db import (
    AttainmentSnapshot,
    KnownLead,
    LeadActivity,
    OrderFact,
    PaymentFact,
    PipelineChange,
    PipelinePosition,
    StageMove,
)
from .db import Opportunity

ZERO = Decimal("0")


class _Reader(Schema):
    """A tolerant reader: what this service needs of another's event, whatever else it carries."""

    class Meta:
        unknown = EXCLUDE


class _Lead(_Reader):
    id = fields.UUID(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    company = fields.String(load_default=None, allow_none=True)
    source = fields.String(load_default=None, allow_none=True)
    status = fields.String(required=True)
    version = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)


class _LeadEvent(_Reader):
    lead = fields.Nested(_Lead, required=True)


class _LeadActivity(_Reader):
    lead_id = fields.UUID(required=True)
    activity_id = fields.UUID(required=True)
    kind = fields.String(required=True)
    occurred_at = fields.AwareDateTime(required=True)


class _Order(_Reader):
    id = fields.String(required=True)
    account_id = fields.UUID(load_default=None, allow_none=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    team_id = fields.String(load_default=None, allow_none=True)
    credited_to = fields.String(load_default=None, allow_none=True)
    total = Money(required=True, strings_only=False)


class _Payment(_Reader):
    id = fields.String(required=True)
    amount = Money(required=True, strings_only=False)
    paid_on = fields.Date(required=True)


class _OrderEvent(_Reader):
    order = fields.Nested(_Order, required=True)
    payment = fields.Nested(_Payment, load_default=None)


def _figure(**kwargs):
    """A target or figure as the targets table holds it (14 digits); exponents and NaN refused."""
    return fields.Decimal(places=2, allow_nan=False, validate=validate.Range(-10**14, 10**14), **kwargs)


def _exactly(pattern: str):
    def check(value: str) -> None:
        if not re.fullmatch(pattern, value):  # not re.match: "$" would let a trailing newline through
            raise ValidationError("not of the expected form")
    return check


class _TeamActual(_Reader):
    team_id = Text(64, required=True, allow_none=True)
    actual = _figure(required=True)


class _Attainment(_Reader):
    subject_type = fields.String(required=True, validate=validate.OneOf(["user", "team"]))
    subject_id = Text(64, min_length=1, required=True)
    metric = Text(20, min_length=1, required=True)
    period = fields.String(required=True, validate=_exactly(r"(19|2[0-9])[0-9]{2}(-(0[1-9]|1[0-2])|-Q[1-4])?"))
    day = fields.Date(required=True)
    target = _figure(required=True)
    actual = _figure(required=True)
    attainment = fields.Decimal(required=True, places=1, allow_nan=False, validate=validate.Range(-10**12, 10**12))
    by_team = fields.List(fields.Nested(_TeamActual), load_default=None, validate=validate.Length(max=1000))


class _AttainmentEvent(_Reader):
    attainment = fields.Nested(_Attainment, required=True)


def _load(schema: Schema, envelope: dict) -> dict:
    try:
        return schema.load(envelope["data"] or {})
    except ValidationError as exc:
        raise Reject(f"invalid {envelope['type']}: {exc.messages}") from None


def _time(envelope: dict) -> dt.datetime:
    value = envelope["time"]
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


_lead_event, _lead_activity, _order_event, _attainment = _LeadEvent(), _LeadActivity(), _OrderEvent(), _AttainmentEvent()


def learn_lead(uow: UnitOfWork, envelope: dict) -> None:
    """lead.created / updated / assigned / merged / converted / disqualified / deleted: who holds it now."""
    lead = _load(_lead_event, envelope)["lead"]
    known = uow.session.get(KnownLead, lead["id"])
    if known is not None and known.version >= lead["version"]:
        return  # a replay, or an older event after a newer one
    if known is None:
        known = KnownLead(id=lead["id"], created_at=lead["created_at"])
        uow.session.add(known)
    known.owner_id, known.team_id, known.company = lead["owner_id"], lead["team_id"], lead["company"]
    known.source, known.version = lead["source"], lead["version"]
    known.status = "deleted" if envelope["type"] == "lead.deleted" else lead["status"]


def learn_lead_activity(uow: UnitOfWork, envelope: dict) -> None:
    """activity.logged on a lead: the rep who logged it (the event's actor) did it that day."""
    data = _load(_lead_activity, envelope)
    if uow.session.get(LeadActivity, data["activity_id"]) is None:
        uow.session.add(LeadActivity(id=data["activity_id"], lead_id=data["lead_id"], kind=data["kind"],
                                     logged_by=envelope.get("actor"), occurred_at=data["occurred_at"]))


def learn_order(uow: UnitOfWork, envelope: dict) -> None:
    """order.confirmed / order.cancelled: an order counts for whom it is credited to, on the day confirmed."""
    order = _load(_order_event, envelope)["order"]
    fact = uow.session.get(OrderFact, order["id"])
    if fact is None:
        fact = OrderFact(order_id=order["id"])
        uow.session.add(fact)
    before = (fact.owner_id, fact.account_id)
    fact.account_id, fact.total = order["account_id"], order["total"]
    fact.owner_id, fact.team_id = order["credited_to"] or order["owner_id"], order["team_id"]
    if envelope["type"] == "order.cancelled":
        fact.cancelled_at = fact.cancelled_at or _time(envelope)
    else:
        fact.confirmed_at = fact.confirmed_at or _time(envelope)
    if fact.confirmed_at is not None:  # what followed the visits before it, for whom it counts then and now
        window = {"since": fact.confirmed_at - visit_progress.FOLLOW_WINDOW, "until": fact.confirmed_at}
        for owner, account in dict.fromkeys([before, (fact.owner_id, fact.account_id)]):
            visit_progress.refresh(uow, owner, account, **window)


def learn_payment(uow: UnitOfWork, envelope: dict) -> None:
    """order.payment_recorded: money collected on the day it was paid."""
    data = _load(_order_event, envelope)
    payment, order = data["payment"], data["order"]
    if payment is None:
        raise Reject("order.payment_recorded without its payment")
    if uow.session.get(PaymentFact, payment["id"]) is None:
        uow.session.add(PaymentFact(payment_id=payment["id"], order_id=order["id"], amount=payment["amount"],
                                    owner_id=order["credited_to"] or order["owner_id"], team_id=order["team_id"],
                                    paid_on=payment["paid_on"]))


def learn_attainment(uow: UnitOfWork, envelope: dict) -> None:
    """performance.attainment: where a subject stood against a target at the end of a day (the latest
    word for that day wins: a replay rewrites the same row)."""
    a = _load(_attainment, envelope)["attainment"]
    key = (a["subject_type"], a["subject_id"], a["metric"], a["period"], a["day"])
    row = uow.session.get(AttainmentSnapshot, key)
    if row is None:
        row = AttainmentSnapshot(subject_type=key[0], subject_id=key[1], metric=key[2], period=key[3], day=key[4])
        uow.session.add(row)
    row.target, row.actual, row.attainment = a["target"], a["actual"], a["attainment"]
    row.by_team = None if a["by_team"] is None else {
        (t["team_id"] or ""): str(t["actual"]) for t in a["by_team"]}


LEAD_HANDLERS = {
    **{(kind, 1): learn_lead for kind in ("lead.created", "lead.updated", "lead.assigned", "lead.merged",
                                          "lead.converted", "lead.disqualified", "lead.deleted")},
    ("activity.logged", 1): learn_lead_activity,
}
ORDER_HANDLERS = {
    ("order.confirmed", 1): learn_order,
    ("order.cancelled", 1): learn_order,
    ("order.payment_recorded", 1): learn_payment,
    ("performance.attainment", 1): learn_attainment,
}


# ---- this service's own deals ---------------------------------------------------------------------
def track(uow: UnitOfWork, kind: str, opp: Opportunity, extra: dict) -> None:
    """Called with every event a deal publishes (deals.opportunity_event), so no change escapes: a
    stage move, win or loss is remembered, and any change of what the deal adds to whose open
    pipeline is written as the difference."""
    now = utcnow()
    if kind == "opportunity.stage_changed":
        _moved(uow, opp, extra["from"], extra["to"], now)
    elif kind in ("opportunity.won", "opportunity.lost"):
        _moved(uow, opp, opp.stage, opp.status, now)
    counted = opp.amount if opp.status == "open" and opp.deleted_at is None else ZERO
    position = uow.session.get(PipelinePosition, opp.id)
    before = (position.owner_id, position.team_id, position.amount) if position else (None, None, ZERO)
    if before == (opp.owner_id, opp.team_id, counted):
        return
    if before[2]:
        uow.session.add(PipelineChange(id=uuid.uuid4(), opportunity_id=opp.id, owner_id=before[0], team_id=before[1],
                                       delta=-before[2], changed_at=now))
    if counted:
        uow.session.add(PipelineChange(id=uuid.uuid4(), opportunity_id=opp.id, owner_id=opp.owner_id,
                                       team_id=opp.team_id, delta=counted, changed_at=now))
    if position is None:
        position = PipelinePosition(opportunity_id=opp.id)
        uow.session.add(position)
    position.owner_id, position.team_id, position.amount = opp.owner_id, opp.team_id, counted


def _moved(uow: UnitOfWork, opp: Opportunity, from_stage: str, to_stage: str, now: dt.datetime) -> None:
    uow.session.add(StageMove(id=uuid.uuid4(), opportunity_id=opp.id, account_id=opp.account_id,
                              owner_id=opp.owner_id, team_id=opp.team_id, from_stage=from_stage, to_stage=to_stage,
                              moved_at=now))
    visit_progress.refresh(uow, opp.owner_id, opp.account_id, since=now - visit_progress.FOLLOW_WINDOW, until=now)
