"""marshmallow schemas of the rep's day (CONTRACT §4 visit plans, daily reports, weekly progress):
what the API accepts and returns. Server-kept fields (status, day, summary, reviewer) are not in
the write schemas, and unknown fields are refused."""
from __future__ import annotations

import datetime as dt
import re

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from crmkit.fields import Day, Money, Text, Timestamp
from crmkit.pagination import PageArgsSchema, page_schema
from crmkit.periods import PERIOD_PATTERN, parse_period

VISIT_KINDS = ("visit", "call")
VISIT_STATUSES = ("planned", "done", "missed", "rescheduled")
REPORT_STATUSES = ("draft", "submitted", "reviewed")
WEEK_PATTERN = r"^(19\d\d|2\d\d\d)-W(0[1-9]|[1-4]\d|5[0-3])$"
MAX_MARKET_ENTRIES = 50


# ---- visits --------------------------------------------------------------------------------------
class VisitCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    account_id = fields.UUID(metadata={"description": "the account visited: exactly one of account_id and lead_id"})
    lead_id = fields.UUID(metadata={"description": "the lead visited: exactly one of account_id and lead_id"})
    contact_id = fields.UUID(allow_none=True, metadata={"description": "a contact of that account (with account_id only)"})
    kind = fields.String(load_default="visit", validate=validate.OneOf(VISIT_KINDS))
    planned_at = Timestamp(required=True, metadata={
        "description": "today or later where the company works, at most a year ahead"})
    purpose = Text(2000, allow_none=True)
    owner_id = Text(64, metadata={"description": "managers, executives and admins: plan it for one of their reps, "
                                                 "who must work that account or hold that lead too"})

    @validates_schema
    def _one_target(self, data, **_kwargs):
        if ("account_id" in data) == ("lead_id" in data):
            raise ValidationError("a visit is to an account or to a lead: give one of account_id and lead_id",
                                  field_name="account_id")
        if data.get("contact_id") and "account_id" not in data:
            raise ValidationError("a contact belongs to an account", field_name="contact_id")


class CheckInSchema(Schema):
    class Meta:
        unknown = RAISE

    at = Timestamp(metadata={"description": "when it happened (default: now): on the visit's own day, not later "
                                            "than now"})
    latitude = fields.Float(allow_none=True, allow_nan=False, validate=validate.Range(-90, 90),
                            metadata={"description": "with longitude, or neither"})
    longitude = fields.Float(allow_none=True, allow_nan=False, validate=validate.Range(-180, 180),
                             metadata={"description": "with latitude, or neither"})
    address = Text(500, allow_none=True)
    outcome = Text(4000, min_length=1, required=True)
    next_contact_at = Timestamp(allow_none=True, metadata={"description": "after the visit"})

    @validates_schema
    def _both_coordinates(self, data, **_kwargs):
        if (data.get("latitude") is None) != (data.get("longitude") is None):
            raise ValidationError("give both latitude and longitude, or neither", field_name="latitude")


class RescheduleSchema(Schema):
    class Meta:
        unknown = RAISE

    planned_at = Timestamp(required=True, metadata={"description": "another time, today or later"})
    reason = Text(2000, min_length=1, required=True)


class MissSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = Text(2000, min_length=1, required=True)


class VisitListArgsSchema(PageArgsSchema):
    date = Day(metadata={"description": "the planned day (where the company works)"})
    owner_id = Text(64)
    team_id = Text(64)
    status = fields.String(validate=validate.OneOf(VISIT_STATUSES))


class VisitSchema(Schema):
    id = fields.UUID()
    owner_id = fields.String()
    team_id = fields.String(allow_none=True)
    account_id = fields.UUID(allow_none=True)
    lead_id = fields.UUID(allow_none=True)
    contact_id = fields.UUID(allow_none=True)
    kind = fields.String(metadata={"enum": list(VISIT_KINDS)})
    planned_at = fields.AwareDateTime()
    date = fields.Date(attribute="day", metadata={"description": "the planned day where the company works"})
    purpose = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": list(VISIT_STATUSES)})
    checked_in_at = fields.AwareDateTime(allow_none=True)
    latitude = fields.Float(allow_none=True)
    longitude = fields.Float(allow_none=True)
    address = fields.String(allow_none=True)
    outcome = fields.String(allow_none=True)
    next_contact_at = fields.AwareDateTime(allow_none=True)
    activity_id = fields.UUID(allow_none=True)
    reason = fields.String(allow_none=True)
    rescheduled_to = fields.UUID(allow_none=True)
    rescheduled_from = fields.UUID(allow_none=True)
    target_hidden = fields.Boolean(metadata={
        "description": "the visited record is not one you may see: its ids are left out"})
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


VisitPageSchema = page_schema(VisitSchema, "VisitPageSchema")


# ---- daily reports -------------------------------------------------------------------------------
class MarketEntrySchema(Schema):
    class Meta:
        unknown = RAISE

    competitor = Text(200, allow_none=True)
    product_category = Text(100, allow_none=True)
    account_id = fields.UUID(allow_none=True, metadata={"description": "an account you can see"})
    price_heard = Money(allow_none=True)
    note = Text(4000, min_length=1, required=True)


class ReportPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    notes = Text(20000, allow_none=True)
    market = fields.List(fields.Nested(MarketEntrySchema), validate=validate.Length(max=MAX_MARKET_ENTRIES))


class ReviewSchema(Schema):
    class Meta:
        unknown = RAISE

    comment = Text(4000, min_length=1, required=True)


class ReportListArgsSchema(PageArgsSchema):
    date = Day(required=True, metadata={"description": "a day that has begun (drafts are made for the last 31)"})
    owner_id = Text(64)
    team_id = Text(64)


class CountAmountSchema(Schema):
    count = fields.Integer()
    amount = Money()


_WHEN = {"format": "date-time"}


class ReportVisitSchema(Schema):
    id = fields.UUID()
    kind = fields.String()
    account_id = fields.UUID(allow_none=True)
    lead_id = fields.UUID(allow_none=True)
    planned_at = fields.String(metadata=_WHEN)
    status = fields.String()
    outcome = fields.String(allow_none=True)
    target_hidden = fields.Boolean()


class ReportVisitsSchema(Schema):
    planned = fields.Integer(metadata={"description": "planned for the day, moved ones excepted"})
    done = fields.Integer()
    missed = fields.Integer()
    rescheduled = fields.Integer()
    items = fields.List(fields.Nested(ReportVisitSchema))


class ReportStageMoveSchema(Schema):
    opportunity_id = fields.UUID(allow_none=True, metadata={"description": "null: a deal you may not see now"})
    to = fields.String(attribute="to_stage", data_key="to")
    moved_from = fields.String(attribute="from_stage", data_key="from")
    moved_at = fields.String(metadata=_WHEN)


class DraftSchema(Schema):
    """What the day holds, recomputed from the records until the report is submitted."""

    visits = fields.Nested(ReportVisitsSchema)
    activities = fields.Dict(keys=fields.String(), values=fields.Integer(),
                             metadata={"description": "logged by the rep that day, by kind (calls included)"})
    calls = fields.Integer()
    new_leads = fields.Integer()
    new_leads_by_source = fields.Dict(keys=fields.String(), values=fields.Integer())
    opportunities_created = fields.Nested(CountAmountSchema)
    stage_moves = fields.List(fields.Nested(ReportStageMoveSchema))
    orders_confirmed = fields.Nested(CountAmountSchema)
    collected = Money()


class CommentSchema(Schema):
    id = fields.UUID()
    author_id = fields.String()
    body = fields.String()
    created_at = fields.AwareDateTime()


class MarketEntryOutSchema(Schema):
    competitor = fields.String(allow_none=True)
    product_category = fields.String(allow_none=True)
    account_id = fields.UUID(allow_none=True)
    price_heard = Money(allow_none=True)
    note = fields.String()


class ReportSchema(Schema):
    id = fields.UUID()
    owner_id = fields.String()
    team_id = fields.String(allow_none=True)
    date = fields.Date(attribute="day")
    status = fields.String(metadata={"enum": list(REPORT_STATUSES)})
    notes = fields.String(allow_none=True)
    market = fields.List(fields.Nested(MarketEntryOutSchema))
    summary = fields.Nested(DraftSchema)
    comments = fields.List(fields.Nested(CommentSchema))
    submitted_at = fields.AwareDateTime(allow_none=True)
    reviewed_at = fields.AwareDateTime(allow_none=True)
    reviewed_by = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


ReportPageSchema = page_schema(ReportSchema, "ReportPageSchema")


# ---- weekly progress and market intelligence -----------------------------------------------------
def parse_week(text: str):
    """`2026-W49` → the Monday of that ISO week."""
    match = re.fullmatch(WEEK_PATTERN, text or "")
    if not match:
        raise ValueError("a week is YYYY-Www (ISO 8601, e.g. 2026-W49)")
    try:
        return dt.date.fromisocalendar(int(match[1]), int(text[6:]), 1)
    except ValueError:
        raise ValueError(f"{text} has no such week") from None


class WeekField(fields.String):
    def __init__(self, **kwargs):
        super().__init__(metadata={"pattern": WEEK_PATTERN, "example": "2026-W49",
                                   "description": "an ISO week that exists (2026 has 53, 2025 has 52)"}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return parse_week(text)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class WeeklyArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    week = WeekField(required=True)
    group_by = fields.String(load_default="owner", validate=validate.OneOf(["owner", "team"]))
    weeks = fields.Integer(load_default=2, validate=validate.Range(1, 12),
                           metadata={"description": "how many weeks, ending with `week` (week over week)"})
    effective_within_days = fields.Integer(load_default=14, validate=validate.Range(1, 90), metadata={
        "description": "a visit is effective when a stage move or an order on its account follows within this"})


class AttainmentSchema(Schema):
    metric = fields.String()
    period = fields.String()
    target = fields.Decimal(as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    actual = fields.Decimal(as_string=True, places=2, metadata={
        "type": "string", "format": "decimal", "description": "for a manager: what was earned in their teams"})
    attainment = fields.Decimal(as_string=True, allow_none=True, metadata={"description": "percent"})
    as_of = fields.Date(metadata={"description": "the end of the day it stood at (the orders service's figure)"})


class WeekFiguresSchema(Schema):
    week = fields.String()
    visits_planned = fields.Integer()
    visits_done = fields.Integer()
    visits_missed = fields.Integer()
    new_leads = fields.Integer()
    new_opportunities = fields.Nested(CountAmountSchema)
    pipeline_change = Money(metadata={"description": "the open pipeline's change over the week"})
    orders = fields.Nested(CountAmountSchema)
    collected = Money()
    visits_effective = fields.Integer(metadata={"description": "done visits to accounts followed by progress"})
    visit_effectiveness = fields.Float(allow_none=True, metadata={
        "description": "visits_effective over the done visits to accounts (null when none)"})
    attainment = fields.List(fields.Nested(AttainmentSchema), metadata={
        "description": "each target's attainment, as last published that week (none without targets)"})


class WeeklyGroupSchema(Schema):
    key = fields.String(allow_none=True, metadata={"description": "the owner or team id"})
    weeks = fields.List(fields.Nested(WeekFiguresSchema))


class WeeklyReportSchema(Schema):
    week = fields.String()
    group_by = fields.String()
    effective_within_days = fields.Integer()
    groups = fields.List(fields.Nested(WeeklyGroupSchema))


class MarketNoteArgsSchema(PageArgsSchema):
    competitor = Text(200, metadata={"description": "part of the competitor's name, any case"})
    product_category = Text(100)
    region = Text(100, metadata={"description": "the tagged account's region"})
    period = fields.String(validate=validate.Regexp(PERIOD_PATTERN), metadata={"example": "2026-Q4"})

    @validates_schema
    def _period(self, data, **_kwargs):
        if data.get("period"):
            try:
                parse_period(data["period"])
            except ValueError as exc:
                raise ValidationError(str(exc), field_name="period") from None


class MarketNoteSchema(Schema):
    id = fields.UUID()
    report_id = fields.UUID()
    owner_id = fields.String()
    team_id = fields.String(allow_none=True)
    date = fields.Date(attribute="day")
    competitor = fields.String(allow_none=True)
    product_category = fields.String(allow_none=True)
    account_id = fields.UUID(allow_none=True)
    region = fields.String(allow_none=True)
    price_heard = Money(allow_none=True)
    note = fields.String(allow_none=True)


MarketNotePageSchema = page_schema(MarketNoteSchema, "MarketNotePageSchema")
