"""The rep's day over HTTP: visit plans, daily reports, weekly progress and market notes.
Thin routes: parse, call one use case, commit, render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, etag_for, require_if_match
from crmkit.idempotency import idempotent
from crmkit.web import Blueprint, ctx, principal, roles

from . import daily_reports, visits, weekly
from .api_shared import LEADERS, SELLERS
from .visit_schemas import (
    CheckInSchema,
    MarketNoteArgsSchema,
    MarketNotePageSchema,
    MissSchema,
    ReportListArgsSchema,
    ReportPageSchema,
    ReportPatchSchema,
    ReportSchema,
    RescheduleSchema,
    ReviewSchema,
    VisitCreateSchema,
    VisitListArgsSchema,
    VisitPageSchema,
    VisitSchema,
    WeeklyArgsSchema,
    WeeklyReportSchema,
)


def _tag(report: dict) -> dict:
    return {"ETag": etag_for(report["version"])}


visits_blp = Blueprint("visits", __name__, description="Visit plans, daily reports, weekly progress, market notes")


# ---- visit plans ------------------------------------------------------------------------------------
@visits_blp.route("/visits", methods=["POST"])
@visits_blp.arguments(VisitCreateSchema)
@idempotent
@visits_blp.response(201, VisitSchema)
@roles(*SELLERS)
def plan_visit(data):
    """Plan a visit or call on an account or a lead (for yourself, or a manager for a rep)."""
    with ctx().db.uow() as uow:
        visit = visits.plan(uow, ctx().settings, principal(), data)
        uow.commit()
        return visits.render(uow, principal(), [visit])[0]


@visits_blp.route("/visits", methods=["GET"])
@visits_blp.arguments(VisitListArgsSchema, location="query", unknown=RAISE)
@visits_blp.response(200, VisitPageSchema)
@roles(*SELLERS)
def list_visits(args):
    """List the visits you may see (yours, your teams'), by planned time."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = visits.list_visits(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@visits_blp.route("/visits/<uuid:visit_id>", methods=["GET"])
@visits_blp.response(200, VisitSchema)
@roles(*SELLERS)
def get_visit(visit_id: uuid.UUID):
    """Read one visit."""
    with ctx().db.uow(readonly=True) as uow:
        return visits.render(uow, principal(), [visits.visible_visit(uow, principal(), visit_id)])[0]


@visits_blp.route("/visits/<uuid:visit_id>/check-in", methods=["POST"])
@visits_blp.arguments(CheckInSchema)
@visits_blp.response(200, VisitSchema)
@roles(*SELLERS)
def check_in(data, visit_id: uuid.UUID):
    """Check a planned visit in as done: the activity is logged on the account or lead."""
    with ctx().db.uow() as uow:
        visit = visits.check_in(uow, ctx().settings, principal(), visit_id, data)
        uow.commit()
        return visits.render(uow, principal(), [visit])[0]


@visits_blp.route("/visits/<uuid:visit_id>/reschedule", methods=["POST"])
@visits_blp.arguments(RescheduleSchema)
@visits_blp.response(200, VisitSchema)
@roles(*SELLERS)
def reschedule(data, visit_id: uuid.UUID):
    """Move a planned visit: it is marked rescheduled, and `rescheduled_to` is the new one."""
    with ctx().db.uow() as uow:
        visit = visits.reschedule(uow, ctx().settings, principal(), visit_id, data)
        uow.commit()
        return visits.render(uow, principal(), [visit])[0]


@visits_blp.route("/visits/<uuid:visit_id>/miss", methods=["POST"])
@visits_blp.arguments(MissSchema)
@visits_blp.response(200, VisitSchema)
@roles(*SELLERS)
def miss(data, visit_id: uuid.UUID):
    """Mark a planned visit missed, with the reason."""
    with ctx().db.uow() as uow:
        visit = visits.miss(uow, ctx().settings, principal(), visit_id, data["reason"])
        uow.commit()
        return visits.render(uow, principal(), [visit])[0]


# ---- daily reports ----------------------------------------------------------------------------------
@visits_blp.route("/daily-reports", methods=["GET"])
@visits_blp.arguments(ReportListArgsSchema, location="query", unknown=RAISE)
@visits_blp.response(200, ReportPageSchema)
@roles(*SELLERS)
def list_reports(args):
    """The day's reports you may read, one per rep, drafted from the day's records until submitted."""
    with ctx().db.uow() as uow:  # writes the day's draft rows the first time it is read
        items, next_cursor = daily_reports.list_reports(uow, principal(), args)
        uow.commit()
    return {"items": items, "next_cursor": next_cursor}


@visits_blp.route("/daily-reports/<uuid:report_id>", methods=["GET"])
@visits_blp.response(200, ReportSchema)
@roles(*SELLERS)
def get_report(report_id: uuid.UUID):
    """Read one daily report."""
    with ctx().db.uow(readonly=True) as uow:
        report = daily_reports.get_report(uow, principal(), report_id)
    return report, 200, _tag(report)


@visits_blp.route("/daily-reports/<uuid:report_id>", methods=["PATCH"])
@visits_blp.arguments(ReportPatchSchema)
@visits_blp.response(200, ReportSchema)
@visits_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_report(changes, report_id: uuid.UUID):
    """Write your report's notes and market section (until submitted).

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        report = daily_reports.patch_report(uow, principal(), report_id, changes, require_if_match)
        uow.commit()
    return report, 200, _tag(report)


@visits_blp.route("/daily-reports/<uuid:report_id>/submit", methods=["POST"])
@visits_blp.response(200, ReportSchema)
@roles(*SELLERS)
def submit_report(report_id: uuid.UUID):
    """Submit your report: its figures are frozen, and it changes only by comments after."""
    with ctx().db.uow() as uow:
        report = daily_reports.submit(uow, ctx().settings, principal(), report_id)
        uow.commit()
    return report, 200, _tag(report)


@visits_blp.route("/daily-reports/<uuid:report_id>/review", methods=["POST"])
@visits_blp.arguments(ReviewSchema)
@idempotent
@visits_blp.response(200, ReportSchema)
@roles(*LEADERS)
def review_report(data, report_id: uuid.UUID):
    """Review a rep's submitted report with a comment (their manager, an executive)."""
    with ctx().db.uow() as uow:
        report = daily_reports.review(uow, ctx().settings, principal(), report_id, data["comment"])
        uow.commit()
    return report, 200, _tag(report)


# ---- weekly progress and market intelligence ----------------------------------------------------------
@visits_blp.route("/reports/weekly-progress", methods=["GET"])
@visits_blp.arguments(WeeklyArgsSchema, location="query", unknown=RAISE)
@visits_blp.response(200, WeeklyReportSchema)
@roles(*SELLERS)
def weekly_progress(args):
    """Visits planned, done and missed, leads, deals, pipeline, orders and collections, week over week."""
    with ctx().db.uow(readonly=True) as uow:
        return weekly.weekly_progress(uow, principal(), args["week"], args["group_by"], args["weeks"],
                                      args["effective_within_days"])


@visits_blp.route("/market-notes", methods=["GET"])
@visits_blp.arguments(MarketNoteArgsSchema, location="query", unknown=RAISE)
@visits_blp.response(200, MarketNotePageSchema)
@roles(*SELLERS)
def market_notes(args):
    """Search the market sections of submitted reports by competitor, product category, region, period."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = daily_reports.search_market_notes(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}
