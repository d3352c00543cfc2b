"""Targets, performance and KPI schemes HTTP API (issue 16). Thin routes: parse, call one use case,
commit, render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, require_if_match, tagged
from crmkit.idempotency import idempotent
from crmkit.web import Blueprint, ctx, principal, roles

from . import documents, performance, targets
from .performance_schemas import (
    ContributionArgsSchema,
    ContributionPageSchema,
    KpiSchemeSchema,
    KpiSchemeStateSchema,
    PerformanceArgsSchema,
    PerformanceSchema,
    TargetCreateSchema,
    TargetListArgsSchema,
    TargetPageSchema,
    TargetPatchSchema,
    TargetSchema,
)

SELLERS = ("rep", "manager", "executive", "admin")
LEADERS = ("manager", "executive", "admin")
performance_blp = Blueprint("performance", __name__, description="Targets, actuals, attainment and the KPI score")


@performance_blp.route("/targets", methods=["POST"])
@performance_blp.arguments(TargetCreateSchema)
@idempotent
@performance_blp.response(201, TargetSchema)
@roles(*LEADERS)
def create_target(fields):
    """Set a target for a user or team of yours, for a month, quarter or year.

    A quarter's or year's distribution gives each month's share (percentages totalling 100, months
    of the period only; even by default; a month has none). The subject is a team of yours or one of
    its people, never yourself (422 "no such team", "no such user" or "no such subject among your
    teams" otherwise). One target per subject, period, metric and narrowing (409 for a second).
    """
    with ctx().db.uow() as uow:
        target = targets.create_target(uow, principal(), fields)
        uow.commit()
        targets.with_members(uow, principal(), [target])
    return target, 201, {**tagged(target), "Location": f"/api/v1/targets/{target.id}"}


@performance_blp.route("/targets", methods=["GET"])
@performance_blp.arguments(TargetListArgsSchema, location="query", unknown=RAISE)
@performance_blp.response(200, TargetPageSchema)
@roles(*SELLERS)
def list_targets(args):
    """The targets you may see: your own; a manager's teams' and their people's."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = targets.list_targets(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@performance_blp.route("/targets/<uuid:target_id>", methods=["GET"])
@performance_blp.response(200, TargetSchema)
@roles(*SELLERS)
def get_target(target_id: uuid.UUID):
    """Read one target (a team's with its members' targets summed and the gap)."""
    with ctx().db.uow(readonly=True) as uow:
        target = targets.with_members(uow, principal(), [targets.visible_target(uow, principal(), target_id)])[0]
    return target, 200, tagged(target)


@performance_blp.route("/targets/<uuid:target_id>", methods=["PATCH"])
@performance_blp.arguments(TargetPatchSchema)
@performance_blp.response(200, TargetSchema)
@performance_blp.doc(parameters=[IF_MATCH])
@roles(*LEADERS)
def patch_target(changes, target_id: uuid.UUID):
    """Change a target's value or distribution. Needs If-Match with the ETag you last read."""
    with ctx().db.uow() as uow:
        target = targets.update_target(uow, principal(), target_id, changes, require_if_match)
        uow.commit()
        targets.with_members(uow, principal(), [target])
    return target, 200, tagged(target)


@performance_blp.route("/performance", methods=["GET"])
@performance_blp.arguments(PerformanceArgsSchema, location="query", unknown=RAISE)
@performance_blp.response(200, PerformanceSchema)
@roles(*SELLERS)
def get_performance(args):
    """Per metric the target, actual and attainment for a period, and the weighted KPI score."""
    with ctx().db.uow(readonly=True) as uow:
        return performance.performance(uow, principal(), args["subject_type"],
                                       args.get("subject_id") or principal().user_id, args["period"])


@performance_blp.route("/performance/contributions", methods=["GET"])
@performance_blp.arguments(ContributionArgsSchema, location="query", unknown=RAISE)
@performance_blp.response(200, ContributionPageSchema)
@roles(*SELLERS)
def list_contributions(args):
    """What makes up a figure: each order, payment, account or activity credited, by day."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = performance.contributions(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@performance_blp.route("/kpi-schemes", methods=["GET"])
@performance_blp.response(200, KpiSchemeStateSchema)
@roles(*SELLERS)
def get_kpi_scheme():
    """The KPI scheme: metrics with weights totalling 100 and a cap on each attainment."""
    with ctx().db.uow(readonly=True) as uow:
        return documents.response(performance.scheme(uow))


@performance_blp.route("/kpi-schemes", methods=["PUT"])
@performance_blp.arguments(KpiSchemeSchema)
@performance_blp.response(200, KpiSchemeStateSchema)
@performance_blp.doc(parameters=[IF_MATCH])
@roles("executive", "admin")
def put_kpi_scheme(document):
    """Replace the KPI scheme (executives, admins); weights total 100 and each metric appears once (422).

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        row = performance.put_scheme(uow, principal(), document, require_if_match)
        uow.commit()
        return documents.response(row)
