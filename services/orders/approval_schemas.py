"""marshmallow schemas of the approval policy document, approval requests and decisions."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, missing, validate

from crmkit.fields import Money, Text, viewer_role
from crmkit.pagination import PageArgsSchema, page_schema

from .domain import COST_HIDDEN_FROM, COST_METRICS, LEVELS, METRICS


class RuleSchema(Schema):
    class Meta:
        unknown = RAISE

    key = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9][a-z0-9_\-]{0,59}$",
                                                                error="lower-case letters, digits, - _"))
    metric = fields.String(required=True, validate=validate.OneOf(METRICS))
    op = fields.String(required=True, validate=validate.OneOf(["above", "below"]))
    threshold = fields.String(required=True, validate=validate.Regexp(r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$",
                                                                      error="a decimal string such as \"25\""))
    chain = fields.List(fields.String(validate=validate.OneOf(LEVELS)), required=True,
                        validate=validate.Length(min=1, max=len(LEVELS)))


class PolicySchema(Schema):
    class Meta:
        unknown = RAISE

    rules = fields.List(fields.Nested(RuleSchema), required=True, validate=validate.Length(max=100))
    limits = fields.Dict(
        keys=fields.String(validate=validate.OneOf(LEVELS[:-1])),
        values=fields.Dict(keys=fields.String(validate=validate.OneOf(METRICS)),
                           values=fields.String(validate=validate.Regexp(r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$"))),
        load_default=dict, metadata={"description": "per level, the most it may approve (e.g. manager: "
                                                    "discount_pct 20); above it the next level up decides too"})
    escalate_after_hours = fields.Float(allow_none=True, load_default=None, allow_nan=False,
                                        validate=validate.Range(min=0, max=8760),
                                        metadata={"description": "a request waiting longer goes up a level; "
                                                                 "null or 0: never"})


class PolicyStateSchema(PolicySchema):
    version = fields.Integer()
    updated_by = fields.String(allow_none=True)
    updated_at = fields.AwareDateTime()


class ReasonSchema(Schema):
    rule = fields.String()
    metric = fields.String()
    op = fields.String()
    threshold = fields.Method("_threshold", metadata={"type": "string"})
    value = fields.Method("_value", metadata={"type": ["string", "null"],
                                              "description": "left out of margin rules for reps and service"})
    chain = fields.List(fields.String())

    @staticmethod
    def _hidden(reason) -> bool:
        return reason["metric"] in COST_METRICS and viewer_role() in COST_HIDDEN_FROM

    def _threshold(self, reason):
        return missing if self._hidden(reason) else reason["threshold"]

    def _value(self, reason):
        return missing if self._hidden(reason) else reason["value"]


class StepSchema(Schema):
    position = fields.Integer()
    level = fields.String()
    approver_id = fields.String(allow_none=True, metadata={"description": "null: any executive"})
    status = fields.String()
    escalated_from = fields.String(allow_none=True)
    decided_by = fields.String(allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    comment = fields.String(allow_none=True)


class ApprovalSchema(Schema):
    id = fields.UUID()
    order_id = fields.UUID()
    order_number = fields.String()
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    order_total = Money()
    currency = fields.String()
    status = fields.String(metadata={"enum": ["pending", "approved", "rejected", "superseded", "cancelled"]})
    reasons = fields.List(fields.Nested(ReasonSchema))
    steps = fields.List(fields.Nested(StepSchema))
    current_approver = fields.String(allow_none=True, data_key="current_approver_id")
    current_level = fields.String(allow_none=True)
    requested_by = fields.String()
    waiting_since = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()
    closed_at = fields.AwareDateTime(allow_none=True)


class ApprovalListArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(["pending", "approved", "rejected", "superseded", "cancelled"]),
                           metadata={"description": "pending alone: the caller's queue"})
    order_id = fields.UUID()


class DecisionSchema(Schema):
    class Meta:
        unknown = RAISE

    decision = fields.String(required=True, validate=validate.OneOf(["approve", "reject"]))
    comment = Text(2000, allow_none=True)


ApprovalPageSchema = page_schema(ApprovalSchema, "ApprovalPageSchema")
