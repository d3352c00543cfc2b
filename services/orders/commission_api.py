"""Commission, alert rules, rankings and the general manager's reports: HTTP API (issue 16). Thin
routes: parse, call one use case, commit, render."""
from __future__ import annotations

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, require_if_match
from crmkit.web import Blueprint, ctx, principal, roles

from . import alerts, commission, documents, performance, reports
from .commission_schemas import (
    AlertRulesSchema,
    AlertRulesStateSchema,
    AttainmentArgsSchema,
    AttainmentReportSchema,
    CollectionsArgsSchema,
    CollectionsReportSchema,
    CommissionArgsSchema,
    CommissionPlansSchema,
    CommissionPlansStateSchema,
    RankingArgsSchema,
    RankingSchema,
    SalesArgsSchema,
    SalesReportSchema,
    StatementSchema,
)

SELLERS = ("rep", "manager", "executive", "admin")
LEADERS = ("manager", "executive", "admin")
commission_blp = Blueprint("commission", __name__,
                           description="Commission plans and statements, alert rules, rankings and sales reports")


@commission_blp.route("/commission-plans", methods=["GET"])
@commission_blp.response(200, CommissionPlansStateSchema)
@roles(*SELLERS)
def get_commission_plans():
    """The commission plans: tiered rates on counted revenue or money collected, and accelerators."""
    with ctx().db.uow(readonly=True) as uow:
        return documents.response(commission.plans(uow))


@commission_blp.route("/commission-plans", methods=["PUT"])
@commission_blp.arguments(CommissionPlansSchema)
@commission_blp.response(200, CommissionPlansStateSchema)
@commission_blp.doc(parameters=[IF_MATCH])
@roles("executive", "admin")
def put_commission_plans(document):
    """Replace the commission plans (executives, admins). Needs If-Match with the ETag you last read.

    422 unless the plans hold together: each name once, a team in one plan at most, at most one plan
    naming no team (the default), and each plan's tiers starting at 0% and rising.
    """
    with ctx().db.uow() as uow:
        row = commission.put_plans(uow, principal(), document, require_if_match)
        uow.commit()
        return documents.response(row)


@commission_blp.route("/commission", methods=["GET"])
@commission_blp.arguments(CommissionArgsSchema, location="query", unknown=RAISE)
@commission_blp.response(200, StatementSchema)
@roles(*SELLERS)
def get_commission(args):
    """A commission statement for a period, every line traced to its order or payment.

    Yours by default; a manager's people's (what they earned in the manager's teams); anyone's for
    executives. Someone else's answers 404 to a rep.
    """
    with ctx().db.uow(readonly=True) as uow:
        return commission.statement(uow, principal(), args.get("user_id") or principal().user_id, args["period"])


@commission_blp.route("/alert-rules", methods=["GET"])
@commission_blp.response(200, AlertRulesStateSchema)
@roles(*SELLERS)
def get_alert_rules():
    """The alert rules: target_reached (attainment reaches a threshold) and pace (behind on day N)."""
    with ctx().db.uow(readonly=True) as uow:
        return documents.response(alerts.rules(uow))


@commission_blp.route("/alert-rules", methods=["PUT"])
@commission_blp.arguments(AlertRulesSchema)
@commission_blp.response(200, AlertRulesStateSchema)
@commission_blp.doc(parameters=[IF_MATCH])
@roles("executive", "admin")
def put_alert_rules(document):
    """Replace the alert rules (executives, admins). Needs If-Match with the ETag you last read.

    422 unless the rules hold together: each name once, a threshold_pct on target_reached rules, a
    day and a below_pct on pace rules, and a day that every period of the kind has (28 for months).
    """
    with ctx().db.uow() as uow:
        row = alerts.put_rules(uow, principal(), document, require_if_match)
        uow.commit()
        return documents.response(row)


@commission_blp.route("/performance/ranking", methods=["GET"])
@commission_blp.arguments(RankingArgsSchema, location="query", unknown=RAISE)
@commission_blp.response(200, RankingSchema)
@roles(*SELLERS)
def get_ranking(args):
    """A team's people ranked by KPI score for a period (a rep sees only their own row)."""
    with ctx().db.uow(readonly=True) as uow:
        return performance.ranking(uow, principal(), args["team_id"], args["period"])


@commission_blp.route("/reports/sales", methods=["GET"])
@commission_blp.arguments(SalesArgsSchema, location="query", unknown=RAISE)
@commission_blp.response(200, SalesReportSchema)
@roles(*LEADERS)
def sales_report(args):
    """Counted sales by product category or region, month by month, beside a year earlier."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.sales(uow, principal(), args["period"], args["group_by"])


@commission_blp.route("/reports/collections", methods=["GET"])
@commission_blp.arguments(CollectionsArgsSchema, location="query", unknown=RAISE)
@commission_blp.response(200, CollectionsReportSchema)
@roles(*LEADERS)
def collections_report(args):
    """Money collected beside counted revenue, month by month."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.collections(uow, principal(), args["period"])


@commission_blp.route("/reports/attainment", methods=["GET"])
@commission_blp.arguments(AttainmentArgsSchema, location="query", unknown=RAISE)
@commission_blp.response(200, AttainmentReportSchema)
@roles(*LEADERS)
def attainment_report(args):
    """Target attainment by team and by rep for a period and metric."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.attainment(uow, principal(), args["period"], args["metric"], args.get("team_id"))
