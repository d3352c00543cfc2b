"""Reports HTTP API: pipeline, forecast, win rate, sales cycle and the opportunity funnel, over what the caller may see."""
from __future__ import annotations

import logging

from marshmallow import RAISE

from crmkit.periods import PeriodArgsSchema
from crmkit.web import Blueprint, ctx, principal, roles

from . import reports
from .api_shared import FUNNEL_READERS, SELLERS
from .report_schemas import (
    ClosedArgsSchema,
    ForecastArgsSchema,
    ForecastReportSchema,
    OpportunityFunnelSchema,
    PipelineArgsSchema,
    PipelineReportSchema,
    SalesCycleReportSchema,
    WinRateReportSchema,
)

log = logging.getLogger(__name__)
report_blp = Blueprint("opportunity-reports", __name__, description="Pipeline, forecast, win rate, sales cycle")

# ---- reports -------------------------------------------------------------------------------------------
@report_blp.route("/reports/pipeline", methods=["GET"])
@report_blp.arguments(PipelineArgsSchema, location="query", unknown=RAISE)
@report_blp.response(200, PipelineReportSchema)
@roles(*SELLERS)
def pipeline_report(args):
    """Open pipeline by stage, owner, team or month, over the deals you may see."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.pipeline(uow, principal(), args["group_by"])


@report_blp.route("/reports/forecast", methods=["GET"])
@report_blp.arguments(ForecastArgsSchema, location="query", unknown=RAISE)
@report_blp.response(200, ForecastReportSchema)
@roles(*SELLERS)
def forecast_report(args):
    """Forecast for a period: committed, best case, pipeline and weighted, by owner or team."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.forecast(uow, principal(), args["period"], args["group_by"])


@report_blp.route("/reports/win-rate", methods=["GET"])
@report_blp.arguments(ClosedArgsSchema, location="query", unknown=RAISE)
@report_blp.response(200, WinRateReportSchema)
@roles(*SELLERS)
def win_rate_report(args):
    """Win rate over deals closed in the period."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.win_rate(uow, principal(), args.get("period"), args["group_by"])


@report_blp.route("/reports/sales-cycle", methods=["GET"])
@report_blp.arguments(ClosedArgsSchema, location="query", unknown=RAISE)
@report_blp.response(200, SalesCycleReportSchema)
@roles(*SELLERS)
def sales_cycle_report(args):
    """Average days from creation to close over deals closed in the period."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.sales_cycle(uow, principal(), args.get("period"), args["group_by"])


@report_blp.route("/reports/opportunity-funnel", methods=["GET"])
@report_blp.arguments(PeriodArgsSchema, location="query", unknown=RAISE)
@report_blp.response(200, OpportunityFunnelSchema)
@roles(*FUNNEL_READERS)
def opportunity_funnel(args):
    """The opportunity half of the funnel for a period."""
    with ctx().db.uow(readonly=True) as uow:
        return reports.opportunity_funnel(uow, principal(), args["period"])
