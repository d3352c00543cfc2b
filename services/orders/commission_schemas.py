"""marshmallow schemas of commission plans and statements, alert rules, rankings and the general
manager's reports (issue 16)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from crmkit.fields import Text
from crmkit.periods import PeriodField

from .performance_schemas import DecimalText, FigureSchema, within
from .scorecard import METRICS

_DECIMAL = {"type": "string", "format": "decimal"}
_MAYBE_DECIMAL = {"type": ["string", "null"], "format": "decimal"}


_PCT_TEXT = r"^[0-9]{1,4}(\.[0-9]{1,2})?$"


def Pct(low: int = 0, high: int = 1000, **kw) -> DecimalText:  # noqa: N802 - a field factory
    """A percentage as a decimal string ("2.5")."""
    return DecimalText(pattern=_PCT_TEXT, error='a percentage as a decimal string such as "2.5" (at most two decimals)',
                       validate=within(low, high), **kw)


def _money(**kw) -> fields.Decimal:
    return fields.Decimal(as_string=True, places=2, metadata={**_DECIMAL, **kw.pop("metadata", {})}, **kw)


# ---- commission plans -----------------------------------------------------------------------------------
class _Strict(Schema):
    class Meta:
        unknown = RAISE


class CommissionTierSchema(_Strict):
    from_pct = Pct(required=True, metadata={"description": "the tier starts at this attainment of the target"})
    rate_pct = Pct(0, 100, required=True, metadata={"description": "commission in percent of the basis"})


class CommissionAcceleratorSchema(_Strict):
    above_pct = Pct(required=True, metadata={"description": "attainment above which the rate is multiplied"})
    multiplier = Pct(1, 10, required=True, metadata={"example": "1.5"})


class CommissionPlanSchema(_Strict):
    name = Text(60, min_length=1, required=True)
    basis = fields.String(required=True, validate=validate.OneOf(["revenue", "collections"]),
                          metadata={"description": "counted revenue, or money collected"})
    teams = fields.List(Text(64, min_length=1), load_default=list, validate=validate.Length(max=200),
                        metadata={"description": "the teams whose people it pays; none: everyone else"})
    tiers = fields.List(fields.Nested(CommissionTierSchema), required=True, validate=validate.Length(min=1, max=20))
    accelerator = fields.Nested(CommissionAcceleratorSchema, allow_none=True, load_default=None)


class CommissionPlansSchema(_Strict):
    plans = fields.List(fields.Nested(CommissionPlanSchema), required=True, validate=validate.Length(max=50))


class CommissionPlansStateSchema(CommissionPlansSchema):
    version = fields.Integer()
    updated_by = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()


class CommissionArgsSchema(_Strict):
    period = PeriodField(required=True)
    user_id = Text(64, metadata={"description": "you, by default"})


class CommissionPartSchema(Schema):
    amount = _money()
    rate_pct = fields.Decimal(as_string=True, metadata=dict(_DECIMAL))
    commission = _money()


class StatementLineSchema(Schema):
    plan = fields.String(metadata={"description": "the plan that pays it: that of the team it was credited in"})
    source = fields.String(metadata={"enum": ["order", "payment"]})
    source_id = fields.String(metadata={"description": "the order's or the payment's id"})
    order_id = fields.String(allow_none=True)
    occurred_on = fields.Date()
    amount = _money()
    commission = _money()
    parts = fields.List(fields.Nested(CommissionPartSchema), metadata={"description": "split where a tier begins"})


class PlanSummarySchema(Schema):
    plan = fields.String()
    basis = fields.String()
    target = fields.Decimal(as_string=True, places=2, allow_none=True, metadata=dict(_MAYBE_DECIMAL))
    basis_total = _money()
    attainment = fields.Decimal(as_string=True, places=1, allow_none=True, metadata=dict(_MAYBE_DECIMAL))
    total = _money()


class StatementSchema(Schema):
    user_id = fields.String()
    period = fields.String()
    plan = fields.String(allow_none=True, metadata={"description": "the plan of the person's team now"})
    plans_version = fields.Integer()
    basis = fields.String(allow_none=True)
    target = fields.Decimal(as_string=True, places=2, allow_none=True, metadata=dict(_MAYBE_DECIMAL))
    basis_total = _money()
    attainment = fields.Decimal(as_string=True, places=1, allow_none=True, metadata=dict(_MAYBE_DECIMAL))
    total = _money(metadata={"description": "every plan's commission in the period"})
    plans = fields.List(fields.Nested(PlanSummarySchema), metadata={"description": "each plan that paid"})
    lines = fields.List(fields.Nested(StatementLineSchema))


# ---- alert rules -------------------------------------------------------------------------------------------
class AlertRuleSchema(_Strict):
    name = Text(60, min_length=1, required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["target_reached", "pace"]))
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    period_kind = fields.String(required=True, validate=validate.OneOf(["month", "quarter", "year"]))
    threshold_pct = Pct(1, 1000, metadata={"description": "target_reached: fire at this attainment"})
    day = fields.Integer(strict=True, validate=validate.Range(min=1, max=365),
                         metadata={"description": "pace: the day of the period to check (1 = its first)"})
    below_pct = Pct(1, 1000, metadata={"description": "pace: warn when attainment is below this"})


class AlertRulesSchema(_Strict):
    rules = fields.List(fields.Nested(AlertRuleSchema), required=True, validate=validate.Length(max=50))


class AlertRulesStateSchema(AlertRulesSchema):
    version = fields.Integer()
    updated_by = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()


# ---- ranking and reports -----------------------------------------------------------------------------------
class RankingArgsSchema(_Strict):
    period = PeriodField(required=True)
    team_id = Text(64, required=True)


class RankedSchema(Schema):
    rank = fields.Integer()
    user_id = fields.String()
    score = fields.Decimal(as_string=True, places=1, metadata=dict(_DECIMAL))
    metrics = fields.Dict(keys=fields.String(), values=fields.Nested(FigureSchema))


class RankingSchema(Schema):
    team_id = fields.String()
    period = fields.String()
    scheme_version = fields.Integer()
    items = fields.List(fields.Nested(RankedSchema))


class SalesArgsSchema(_Strict):
    period = PeriodField(required=True)
    group_by = fields.String(load_default="category", validate=validate.OneOf(["category", "region"]))


class SalesRowSchema(Schema):
    month = fields.String()
    group = fields.String(allow_none=True, metadata={"description": "the category or region (null: none)"})
    revenue = _money()
    gross_margin = _money()
    revenue_year_before = _money()
    change_pct = fields.Decimal(as_string=True, places=1, allow_none=True, metadata=dict(_MAYBE_DECIMAL))


class SalesReportSchema(Schema):
    period = fields.String()
    group_by = fields.String()
    items = fields.List(fields.Nested(SalesRowSchema))


class CollectionsArgsSchema(_Strict):
    period = PeriodField(required=True)


class CollectionsRowSchema(Schema):
    month = fields.String()
    revenue = _money()
    collections = _money()
    collected_pct = fields.Decimal(as_string=True, places=1, allow_none=True, metadata=dict(_MAYBE_DECIMAL))


class CollectionsReportSchema(Schema):
    period = fields.String()
    items = fields.List(fields.Nested(CollectionsRowSchema))


class AttainmentArgsSchema(_Strict):
    period = PeriodField(required=True)
    metric = fields.String(load_default="revenue", validate=validate.OneOf(METRICS))
    team_id = Text(64, metadata={"description": "a team and those under it; all of yours by default"})


class PersonAttainmentSchema(FigureSchema):
    user_id = fields.String()


class TeamAttainmentSchema(FigureSchema):
    team_id = fields.String()
    people = fields.List(fields.Nested(PersonAttainmentSchema))


class AttainmentReportSchema(Schema):
    period = fields.String()
    metric = fields.String()
    items = fields.List(fields.Nested(TeamAttainmentSchema))
