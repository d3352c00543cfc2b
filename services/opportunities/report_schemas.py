"""The reports' query arguments and answers (GET /reports/...): marshmallow schemas."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from crmkit.fields import Money
from crmkit.periods import PeriodField

SKU = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$", error="letters, digits, . _ - (up to 64)")



# ---- reports -----------------------------------------------------------------------------------------
class PipelineArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    group_by = fields.String(load_default="stage", validate=validate.OneOf(("stage", "owner", "team", "region", "month")))


class ForecastArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    period = PeriodField(required=True, metadata={"description": "YYYY, YYYY-MM or YYYY-Qn"})
    group_by = fields.String(load_default="owner", validate=validate.OneOf(("owner", "team")))


class ClosedArgsSchema(Schema):
    """Win rate and sales cycle: over deals closed in the period (all time when left out)."""

    class Meta:
        unknown = RAISE

    period = PeriodField(metadata={"description": "YYYY, YYYY-MM or YYYY-Qn; all time when left out"})
    group_by = fields.String(load_default="owner", validate=validate.OneOf(("owner", "team")))


class PipelineRowSchema(Schema):
    key = fields.String(allow_none=True)
    currency = fields.String()
    count = fields.Integer()
    amount = Money()
    weighted = Money()
    expenses = Money()


class PipelineReportSchema(Schema):
    group_by = fields.String()
    rows = fields.List(fields.Nested(PipelineRowSchema))


class ForecastRowSchema(Schema):
    key = fields.String(allow_none=True)
    currency = fields.String()
    closed_won = Money()
    commit = Money()
    best_case = Money()
    pipeline = Money()
    weighted = Money()


class ForecastReportSchema(Schema):
    period = fields.String()
    group_by = fields.String()
    rows = fields.List(fields.Nested(ForecastRowSchema))


class WinRateRowSchema(Schema):
    key = fields.String(allow_none=True)
    won = fields.Integer()
    lost = fields.Integer()
    win_rate = fields.Float(allow_none=True)


class SalesCycleRowSchema(Schema):
    key = fields.String(allow_none=True)
    won = fields.Integer()
    average_days = fields.Float(allow_none=True)


class WinRateReportSchema(Schema):
    period = fields.String(allow_none=True)
    group_by = fields.String()
    rows = fields.List(fields.Nested(WinRateRowSchema))


class SalesCycleReportSchema(Schema):
    period = fields.String(allow_none=True)
    group_by = fields.String()
    rows = fields.List(fields.Nested(SalesCycleRowSchema))


class OpportunityFunnelSchema(Schema):
    period = fields.String()
    opportunities = fields.Integer(metadata={"description": "created in the period"})
    won = fields.Integer(metadata={"description": "of those, won"})
