"""marshmallow schemas of targets, performance and KPI schemes (issue 16)."""
from __future__ import annotations

import re

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from crmkit.fields import Text
from crmkit.pagination import PageArgsSchema, page_schema
from crmkit.periods import PeriodField

from .scorecard import METRICS

_AMOUNT = r"^[0-9]{1,13}(\.[0-9]{1,2})?$"


class DecimalText(fields.Decimal):
    """A decimal given as text in the documented form only (its `pattern`): not a JSON number,
    "1E-999999" or "NaN", which a plain Decimal field would take."""

    def __init__(self, *, pattern: str, error: str, **kwargs):
        self.pattern, self.error = re.compile(pattern), error
        metadata = {"type": "string", "format": "decimal", "pattern": pattern, **kwargs.pop("metadata", {})}
        super().__init__(as_string=True, metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise ValidationError(self.error)
        return super()._deserialize(value, attr, data, **kwargs)


def Amount(**kwargs) -> DecimalText:  # noqa: N802 - a field factory, named like the fields it makes
    """A target's value: a decimal string, not negative (money for money metrics, a count otherwise)."""
    return DecimalText(pattern=_AMOUNT, error='a decimal string such as "900000.00", not negative', places=2,
                       metadata={"example": "900000.00", **kwargs.pop("metadata", {})}, **kwargs)


def within(low: int, high: int):
    """A decimal's range. Not validate.Range: apispec would publish its bounds as decimal strings,
    not valid OpenAPI."""
    def check(value) -> None:
        if not low <= value <= high:
            raise ValidationError(f"from {low} to {high}")
    return check


_PCT = fields.Decimal(as_string=True, places=2, validate=within(0, 100),
                      metadata={"type": "string", "format": "decimal", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,2})?$"})
_MONTH_PATTERN = r"^(19\d\d|2\d\d\d)-(0[1-9]|1[0-2])$"
_MONTH = validate.Regexp(_MONTH_PATTERN, error="a month such as 2026-11")


class Distribution(fields.Dict):
    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(validate=_MONTH), values=_PCT, allow_none=True, metadata={
            "description": "month (YYYY-MM, within the period) → percentage of the target, totalling 100 "
                           "(even by default)",
            "example": {"2026-10": "30", "2026-11": "30", "2026-12": "40"}}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):  # percentages given as numbers are taken as their decimal text
            value = {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in value.items()}
        return super()._deserialize(value, attr, data, **kwargs)


class TargetCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    subject_type = fields.String(required=True, validate=validate.OneOf(["user", "team"]))
    subject_id = Text(64, min_length=1, required=True)
    period = PeriodField(required=True)
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    value = Amount(required=True)
    product_category = Text(100, min_length=1, allow_none=True)
    region = Text(100, min_length=1, allow_none=True)
    distribution = Distribution()


class TargetPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    value = Amount()
    distribution = Distribution()


class TargetSchema(Schema):
    id = fields.UUID()
    subject_type = fields.String()
    subject_id = fields.String()
    team_id = fields.String(allow_none=True)
    period = fields.String()
    metric = fields.String()
    value = fields.Decimal(as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    product_category = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    distribution = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    members_total = fields.Decimal(as_string=True, places=2, allow_none=True, metadata={
        "type": ["string", "null"], "format": "decimal", "description": "a team's: its members' targets summed"})
    gap = fields.Decimal(as_string=True, places=2, allow_none=True, metadata={
        "type": ["string", "null"], "format": "decimal", "description": "a team's target less its members'"})
    created_by = fields.String()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class TargetListArgsSchema(PageArgsSchema):
    subject_type = fields.String(validate=validate.OneOf(["user", "team"]))
    subject_id = Text(64)
    metric = fields.String(validate=validate.OneOf(METRICS))
    period = PeriodField()


class PerformanceArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    period = PeriodField(required=True)
    subject_type = fields.String(load_default="user", validate=validate.OneOf(["user", "team"]))
    subject_id = Text(64, metadata={"description": "you, by default"})


_DEC = {"as_string": True, "places": 2, "allow_none": True, "metadata": {"type": ["string", "null"], "format": "decimal"}}


class FigureSchema(Schema):
    target = fields.Decimal(**_DEC)
    actual = fields.Decimal(as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    attainment = fields.Decimal(as_string=True, places=1, allow_none=True,
                                metadata={"type": ["string", "null"], "format": "decimal",
                                          "description": "actual / target in percent; null without a target"})


class NarrowedFigureSchema(FigureSchema):
    metric = fields.String()
    product_category = fields.String(allow_none=True)
    region = fields.String(allow_none=True)


class SchemeItemSchema(Schema):
    class Meta:
        unknown = RAISE

    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    weight = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=100))
    cap_pct = fields.Integer(load_default=100, strict=True, validate=validate.Range(min=100, max=1000),
                             metadata={"description": "attainment above this counts as this (e.g. 120)"})


class KpiSchemeSchema(Schema):
    class Meta:
        unknown = RAISE

    metrics = fields.List(fields.Nested(SchemeItemSchema), required=True,
                          validate=validate.Length(min=1, max=len(METRICS)))


class KpiSchemeStateSchema(KpiSchemeSchema):
    version = fields.Integer()
    updated_by = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()


class KpiSchema(Schema):
    score = fields.Decimal(as_string=True, places=1, metadata={"type": "string", "format": "decimal"})
    scheme_version = fields.Integer()
    metrics = fields.List(fields.Nested(SchemeItemSchema))


class PerformanceSchema(Schema):
    subject_type = fields.String()
    subject_id = fields.String()
    period = fields.String()
    metrics = fields.Dict(keys=fields.String(), values=fields.Nested(FigureSchema))
    narrowed = fields.List(fields.Nested(NarrowedFigureSchema))
    kpi = fields.Nested(KpiSchema)


class ContributionArgsSchema(PageArgsSchema):
    period = PeriodField(required=True)
    subject_type = fields.String(load_default="user", validate=validate.OneOf(["user", "team"]))
    subject_id = Text(64, required=True)
    metric = fields.String(validate=validate.OneOf(METRICS))


class ContributionSchema(Schema):
    event_id = fields.String()
    metric = fields.String()
    user_id = fields.String()
    team_id = fields.String()
    month = fields.String()
    occurred_on = fields.Date()
    amount = fields.Decimal(as_string=True, places=2, metadata={"type": "string", "format": "decimal"})
    product_category = fields.String()
    region = fields.String()
    source = fields.String(metadata={"enum": ["order", "payment", "account", "activity"]})
    source_id = fields.String()
    order_id = fields.String(allow_none=True)


TargetPageSchema = page_schema(TargetSchema, "TargetPageSchema")
ContributionPageSchema = page_schema(ContributionSchema, "ContributionPageSchema")
