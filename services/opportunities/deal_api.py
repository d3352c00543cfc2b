"""Opportunities HTTP API: deals through the pipeline, their teams, collisions, activities, expenses,
and the stages document. Thin routes: parse, call one use case, commit, render."""
from __future__ import annotations

import logging
import uuid

from marshmallow import RAISE
from sqlalchemy.exc import SQLAlchemyError

from crmkit.activities import ActivityCreateSchema
from crmkit.etag import IF_MATCH, IF_MATCH_OPTIONAL, check_if_match_if_given, etag_for, require_if_match
from crmkit.idempotency import idempotent
from crmkit.pagination import PageArgsSchema
from crmkit.web import Blueprint, ctx, principal, roles

from . import activities, deals, pipeline, stages
from .api_shared import DEAL_READERS, SELLERS, tagged
from .schemas import (
    ActivityPageSchema,
    ActivitySchema,
    ChecklistTickSchema,
    CollisionDismissSchema,
    CollisionListSchema,
    ExpenseCreateSchema,
    ExpensePageSchema,
    ExpenseSchema,
    LoseSchema,
    OpportunityCreateSchema,
    OpportunityListArgsSchema,
    OpportunityPageSchema,
    OpportunitySchema,
    OpportunityWriteSchema,
    StageMoveSchema,
    StagesSchema,
    TeamSchema,
    WinSchema,
)

log = logging.getLogger(__name__)
deals_blp = Blueprint("opportunities", __name__, description="Opportunities through the pipeline")

# ---- opportunities ---------------------------------------------------------------------------------------
@deals_blp.route("/opportunities", methods=["POST"])
@deals_blp.arguments(OpportunityCreateSchema)
@idempotent
@deals_blp.response(201, OpportunitySchema)
@roles(*SELLERS)
def create_opportunity(fields):
    """Open a deal on an account you own or lead; collisions with other reps' deals are flagged."""
    with ctx().db.uow() as uow:
        opp = deals.create_opportunity(uow, ctx().settings, principal(), fields)
        uow.commit()
    # Rendered after the commit: the write transaction holds collision match-key locks that every
    # look-alike deal waits for, so it ends as soon as the deal is saved.
    _render_committed(opp)
    return opp, 201, {**tagged(opp), "Location": f"/api/v1/opportunities/{opp.id}"}


@deals_blp.route("/opportunities", methods=["GET"])
@deals_blp.arguments(OpportunityListArgsSchema, location="query", unknown=RAISE)
@deals_blp.response(200, OpportunityPageSchema)
@roles(*DEAL_READERS)
def list_opportunities(args):
    """List the opportunities you may see, with filters and a cursor.

    `cursor` is opaque: only a `next_cursor` this API answered.
    """
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = deals.list_opportunities(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@deals_blp.route("/opportunities/<uuid:opp_id>", methods=["GET"])
@deals_blp.response(200, OpportunitySchema)
@roles(*DEAL_READERS)
def get_opportunity(opp_id: uuid.UUID):
    """Read one opportunity, with its virtual team, checklist and collisions."""
    with ctx().db.uow(readonly=True) as uow:
        opp = deals.get_opportunity(uow, principal(), opp_id)
    return opp, 200, tagged(opp)


def _changed(action):
    """Run a change to one opportunity in a unit of work; answer it rendered, with its new ETag."""
    with ctx().db.uow() as uow:
        opp = action(uow)
        uow.commit()
    # After the commit, like a create: a change that ran collision detection holds match-key locks
    # that other look-alike deals wait for.
    _render_committed(opp)
    return opp, 200, tagged(opp)


def _render_committed(opp) -> None:
    """Render a deal that is already saved. Its team, checklist and collisions are read in a second
    transaction; if that fails the change still happened, so the answer is the deal without them,
    never an error (a client would retry, and create it twice)."""
    try:
        with ctx().db.uow(readonly=True) as uow:
            deals.render_opportunities(uow, [opp])
    except SQLAlchemyError:
        log.warning("could not render a saved opportunity", exc_info=True)
        opp.team, opp.collisions, opp.checklist = [], [], []


@deals_blp.route("/opportunities/<uuid:opp_id>", methods=["PATCH"])
@deals_blp.arguments(OpportunityWriteSchema)
@deals_blp.response(200, OpportunitySchema)
@deals_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_opportunity(changes, opp_id: uuid.UUID):
    """Change an open opportunity (its owner or their leader); collisions are re-checked.

    Needs If-Match with the ETag you last read. Each product (SKU) once; put the quantity in `qty`.
    """
    return _changed(lambda uow: deals.update_opportunity(uow, ctx().settings, principal(), opp_id, changes,
                                                            require_if_match))


@deals_blp.route("/opportunities/<uuid:opp_id>", methods=["DELETE"])
@deals_blp.response(204)
@roles(*SELLERS)
def delete_opportunity(opp_id: uuid.UUID):
    """Delete an opportunity (soft)."""
    with ctx().db.uow() as uow:
        deals.delete_opportunity(uow, ctx().settings, principal(), opp_id)
        uow.commit()


@deals_blp.route("/opportunities/<uuid:opp_id>/stage", methods=["POST"])
@deals_blp.arguments(StageMoveSchema)
@deals_blp.response(200, OpportunitySchema)
@deals_blp.alt_response(409, description="a required checklist item is not done (named in `errors.checklist`)")
@deals_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def move_stage(body, opp_id: uuid.UUID):
    """Move an open opportunity to another stage; forward past a required checklist item is 409."""
    return _changed(lambda uow: pipeline.move_stage(uow, ctx().settings, principal(), opp_id, body["stage"],
                                                    check_if_match_if_given))


@deals_blp.route("/opportunities/<uuid:opp_id>/checklist/<string(maxlength=40):key>", methods=["POST"])
@deals_blp.arguments(ChecklistTickSchema)
@deals_blp.response(200, OpportunitySchema)
@roles(*SELLERS)
def tick_checklist(body, opp_id: uuid.UUID, key: str):
    """Tick (or untick) an item of the current stage's checklist."""
    return _changed(lambda uow: pipeline.tick_checklist(uow, ctx().settings, principal(), opp_id, key, body["done"]))


@deals_blp.route("/opportunities/<uuid:opp_id>/win", methods=["POST"])
@deals_blp.arguments(WinSchema)
@deals_blp.response(200, OpportunitySchema)
@deals_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def win(body, opp_id: uuid.UUID):
    """Mark an opportunity won."""
    return _changed(lambda uow: pipeline.win(uow, ctx().settings, principal(), opp_id, body, check_if_match_if_given))


@deals_blp.route("/opportunities/<uuid:opp_id>/lose", methods=["POST"])
@deals_blp.arguments(LoseSchema)
@deals_blp.response(200, OpportunitySchema)
@deals_blp.doc(parameters=[IF_MATCH_OPTIONAL])
@roles(*SELLERS)
def lose(body, opp_id: uuid.UUID):
    """Mark an opportunity lost, with the reason."""
    return _changed(lambda uow: pipeline.lose(uow, ctx().settings, principal(), opp_id, body["reason"],
                                              check_if_match_if_given))


@deals_blp.route("/opportunities/<uuid:opp_id>/team", methods=["PUT"])
@deals_blp.arguments(TeamSchema)
@deals_blp.response(200, OpportunitySchema)
@roles(*SELLERS)
def put_opportunity_team(body, opp_id: uuid.UUID):
    """Replace an opportunity's virtual team (tech, service, presales, ...).

    Each member once, every one an active user.
    """
    return _changed(lambda uow: deals.set_opportunity_team(uow, ctx().settings, principal(), opp_id,
                                                              body["members"]))


@deals_blp.route("/opportunities/<uuid:opp_id>/collisions", methods=["GET"])
@deals_blp.response(200, CollisionListSchema)
@roles(*SELLERS)
def list_collisions(opp_id: uuid.UUID):
    """The other reps' deals this one collides with (a hidden deal shows only its owner and whom to ask)."""
    with ctx().db.uow(readonly=True) as uow:
        return {"items": deals.list_collisions(uow, principal(), opp_id)}


@deals_blp.route("/opportunities/<uuid:opp_id>/collisions/<uuid:other_id>/dismissal", methods=["POST"])
@deals_blp.arguments(CollisionDismissSchema)
@deals_blp.response(204)
@roles("manager", "executive", "admin")
def dismiss_collision(body, opp_id: uuid.UUID, other_id: uuid.UUID):
    """Clear a flagged pair that is not the same deal (whoever may change both deals)."""
    with ctx().db.uow() as uow:
        deals.dismiss_collision(uow, ctx().settings, principal(), opp_id, other_id, body.get("reason"))
        uow.commit()
    return "", 204


@deals_blp.route("/opportunities/<uuid:opp_id>/activities", methods=["POST"])
@deals_blp.arguments(ActivityCreateSchema)
@idempotent
@deals_blp.response(201, ActivitySchema)
@roles(*DEAL_READERS)
def log_opportunity_activity(data, opp_id: uuid.UUID):
    """Log a call, visit or e-mail on an opportunity."""
    with ctx().db.uow() as uow:
        activity = activities.log_activity(uow, ctx().settings, principal(), data, opp_id=opp_id)
        uow.commit()
    return activity


@deals_blp.route("/opportunities/<uuid:opp_id>/activities", methods=["GET"])
@deals_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@deals_blp.response(200, ActivityPageSchema)
@roles(*DEAL_READERS)
def list_opportunity_activities(args, opp_id: uuid.UUID):
    """List an opportunity's activities, newest first."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = activities.list_activities(uow, principal(), args, opp_id=opp_id)
    return {"items": items, "next_cursor": next_cursor}


@deals_blp.route("/opportunities/<uuid:opp_id>/expenses", methods=["POST"])
@deals_blp.arguments(ExpenseCreateSchema)
@idempotent
@deals_blp.response(201, ExpenseSchema)
@roles(*SELLERS)
def add_expense(data, opp_id: uuid.UUID):
    """Record an expense on an opportunity."""
    with ctx().db.uow() as uow:
        expense = activities.add_expense(uow, ctx().settings, principal(), opp_id, data)
        uow.commit()
    return expense


@deals_blp.route("/opportunities/<uuid:opp_id>/expenses", methods=["GET"])
@deals_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@deals_blp.response(200, ExpensePageSchema)
@roles(*SELLERS)
def list_expenses(args, opp_id: uuid.UUID):
    """List an opportunity's expenses."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = activities.list_expenses(uow, principal(), opp_id, args)
    return {"items": items, "next_cursor": next_cursor}


@deals_blp.route("/pipeline/stages", methods=["GET"])
@deals_blp.response(200, StagesSchema)
@roles(*DEAL_READERS)
def get_stages():
    """Read the pipeline's stages (its ETag is the version to send back)."""
    with ctx().db.uow(readonly=True) as uow:
        doc = stages.get_stages(uow)
    return doc, 200, {"ETag": etag_for(doc["version"])}


@deals_blp.route("/pipeline/stages", methods=["PUT"])
@deals_blp.arguments(StagesSchema)
@deals_blp.response(200, StagesSchema)
@deals_blp.doc(parameters=[IF_MATCH])
@roles("admin")
def put_stages(body):
    """Replace the pipeline's stages (admin); a stage with open deals cannot be removed.

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        doc = stages.put_stages(uow, ctx().settings, principal(), body, require_if_match)
        uow.commit()
    return doc, 200, {"ETag": etag_for(doc["version"])}
