"""Opportunities HTTP API: thin routes that parse, call the service layer, commit and render."""
from __future__ import annotations

import logging
import uuid

from marshmallow import RAISE
from sqlalchemy.exc import SQLAlchemyError

from crmkit.activities import ActivityCreateSchema
from crmkit.etag import IF_MATCH, IF_MATCH_OPTIONAL, check_if_match_if_given, etag_for, require_if_match
from crmkit.idempotency import idempotent
from crmkit.pagination import PageArgsSchema
from crmkit.periods import PeriodArgsSchema
from crmkit.web import Blueprint, create_service_app, ctx, principal, roles

from . import accounts, activities, contacts, deals, pipeline, reports, stages
from .bootstrap import context
from .schemas import (
    AccountCreateSchema,
    AccountListArgsSchema,
    AccountPageSchema,
    AccountSchema,
    AccountWriteSchema,
    ActivityPageSchema,
    ActivitySchema,
    ChecklistTickSchema,
    ClosedArgsSchema,
    CollisionDismissSchema,
    CollisionListSchema,
    ContactCreateAnywhereSchema,
    ContactCreateSchema,
    ContactListArgsSchema,
    ContactPageSchema,
    ContactSchema,
    ContactWriteSchema,
    ExpenseCreateSchema,
    ExpensePageSchema,
    ExpenseSchema,
    ForecastArgsSchema,
    ForecastReportSchema,
    LoseSchema,
    OpportunityCreateSchema,
    OpportunityFunnelSchema,
    OpportunityListArgsSchema,
    OpportunityPageSchema,
    OpportunitySchema,
    OpportunityWriteSchema,
    PipelineArgsSchema,
    PipelineReportSchema,
    SalesCycleReportSchema,
    StageMoveSchema,
    StagesSchema,
    TeamSchema,
    WinRateReportSchema,
    WinSchema,
)

log = logging.getLogger(__name__)
accounts_blp = Blueprint("accounts", __name__, description="Accounts (customers) and their contacts")
deals_blp = Blueprint("opportunities", __name__, description="Opportunities through the pipeline")
report_blp = Blueprint("opportunity-reports", __name__, description="Pipeline, forecast, win rate, sales cycle")

SELLERS = ("rep", "manager", "executive", "admin")
DEAL_READERS = (*SELLERS, "service")
FUNNEL_READERS = (*SELLERS, "marketing")


def _tagged(record) -> dict:
    return {"ETag": etag_for(record.version)}


# ---- accounts ----------------------------------------------------------------------------------------
@accounts_blp.route("/accounts", methods=["POST"])
@accounts_blp.arguments(AccountCreateSchema)
@idempotent
@accounts_blp.response(201, AccountSchema)
@roles(*SELLERS)
def create_account(fields):
    """Create an account (a customer); you own it unless a leader names an owner.

    An `owner_id` must be an active rep or manager, within your teams for a manager.
    """
    with ctx().db.uow() as uow:
        account = accounts.create_account(uow, ctx().settings, principal(), fields)
        uow.commit()
    return account, 201, {**_tagged(account), "Location": f"/api/v1/accounts/{account.id}"}


@accounts_blp.route("/accounts", methods=["GET"])
@accounts_blp.arguments(AccountListArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, AccountPageSchema)
@roles(*DEAL_READERS)
def list_accounts(args):
    """List the accounts you may see.

    `cursor` is opaque: only a `next_cursor` this API answered.
    """
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = accounts.list_accounts(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["GET"])
@accounts_blp.response(200, AccountSchema)
@roles(*DEAL_READERS)
def get_account(account_id: uuid.UUID):
    """Read one account."""
    with ctx().db.uow(readonly=True) as uow:
        account = accounts.render_accounts(uow, [accounts.visible_account(uow, principal(), account_id)])[0]
    return account, 200, _tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["PATCH"])
@accounts_blp.arguments(AccountWriteSchema)
@accounts_blp.response(200, AccountSchema)
@accounts_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_account(changes, account_id: uuid.UUID):
    """Change an account (its owner or their leader).

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        account = accounts.update_account(uow, ctx().settings, principal(), account_id, changes, require_if_match)
        uow.commit()
    return account, 200, _tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>", methods=["DELETE"])
@accounts_blp.response(204)
@roles(*SELLERS)
def delete_account(account_id: uuid.UUID):
    """Delete an account with no open deals (soft)."""
    with ctx().db.uow() as uow:
        accounts.delete_account(uow, ctx().settings, principal(), account_id)
        uow.commit()


@accounts_blp.route("/accounts/<uuid:account_id>/team", methods=["PUT"])
@accounts_blp.arguments(TeamSchema)
@accounts_blp.response(200, AccountSchema)
@roles(*SELLERS)
def put_account_team(body, account_id: uuid.UUID):
    """Replace an account's virtual team.

    Each member once, every one an active user.
    """
    with ctx().db.uow() as uow:
        account = accounts.set_account_team(uow, ctx().settings, principal(), account_id, body["members"])
        uow.commit()
    return account, 200, _tagged(account)


@accounts_blp.route("/accounts/<uuid:account_id>/contacts", methods=["POST"])
@accounts_blp.arguments(ContactCreateSchema)
@idempotent
@accounts_blp.response(201, ContactSchema)
@roles(*SELLERS)
def add_contact(fields, account_id: uuid.UUID):
    """Add a contact to an account; the first is primary."""
    with ctx().db.uow() as uow:
        contact = contacts.add_contact(uow, ctx().settings, principal(), account_id, fields)
        uow.commit()
    return contact, 201, {**_tagged(contact), "Location": f"/api/v1/contacts/{contact.id}"}


@accounts_blp.route("/accounts/<uuid:account_id>/contacts", methods=["GET"])
@accounts_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ContactPageSchema)
@roles(*DEAL_READERS)
def list_account_contacts(args, account_id: uuid.UUID):
    """List an account's contacts."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = contacts.list_contacts(uow, principal(), args, account_id)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/contacts", methods=["POST"])
@accounts_blp.arguments(ContactCreateAnywhereSchema)
@idempotent
@accounts_blp.response(201, ContactSchema)
@roles(*SELLERS)
def create_contact(fields):
    """Add a contact to the account named in the body."""
    with ctx().db.uow() as uow:
        contact = contacts.add_contact(uow, ctx().settings, principal(), fields.pop("account_id"), fields)
        uow.commit()
    return contact, 201, {**_tagged(contact), "Location": f"/api/v1/contacts/{contact.id}"}


@accounts_blp.route("/contacts", methods=["GET"])
@accounts_blp.arguments(ContactListArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ContactPageSchema)
@roles(*DEAL_READERS)
def list_contacts(args):
    """List the contacts of the accounts you may see."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = contacts.list_contacts(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["GET"])
@accounts_blp.response(200, ContactSchema)
@roles(*DEAL_READERS)
def get_contact(contact_id: uuid.UUID):
    """Read one contact."""
    with ctx().db.uow(readonly=True) as uow:
        contact = contacts.get_contact(uow, principal(), contact_id)
    return contact, 200, _tagged(contact)


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["PATCH"])
@accounts_blp.arguments(ContactWriteSchema)
@accounts_blp.response(200, ContactSchema)
@accounts_blp.doc(parameters=[IF_MATCH])
@roles(*SELLERS)
def patch_contact(changes, contact_id: uuid.UUID):
    """Change a contact; making it primary demotes the old one.

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        contact = contacts.update_contact(uow, ctx().settings, principal(), contact_id, changes, require_if_match)
        uow.commit()
    return contact, 200, _tagged(contact)


@accounts_blp.route("/contacts/<uuid:contact_id>", methods=["DELETE"])
@accounts_blp.response(204)
@roles(*SELLERS)
def delete_contact(contact_id: uuid.UUID):
    """Delete a contact (soft)."""
    with ctx().db.uow() as uow:
        contacts.delete_contact(uow, ctx().settings, principal(), contact_id)
        uow.commit()


@accounts_blp.route("/accounts/<uuid:account_id>/activities", methods=["POST"])
@accounts_blp.arguments(ActivityCreateSchema)
@idempotent
@accounts_blp.response(201, ActivitySchema)
@roles(*DEAL_READERS)
def log_account_activity(data, account_id: uuid.UUID):
    """Log a call, visit or e-mail on an account."""
    with ctx().db.uow() as uow:
        activity = activities.log_activity(uow, ctx().settings, principal(), data, account_id=account_id)
        uow.commit()
    return activity


@accounts_blp.route("/accounts/<uuid:account_id>/activities", methods=["GET"])
@accounts_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@accounts_blp.response(200, ActivityPageSchema)
@roles(*DEAL_READERS)
def list_account_activities(args, account_id: uuid.UUID):
    """List an account's activities, newest first."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = activities.list_activities(uow, principal(), args, account_id=account_id)
    return {"items": items, "next_cursor": next_cursor}


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
    return opp, 201, {**_tagged(opp), "Location": f"/api/v1/opportunities/{opp.id}"}


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
    return opp, 200, _tagged(opp)


def _changed(action):
    """Run a change to one opportunity in a unit of work; answer it rendered, with its new ETag."""
    with ctx().db.uow() as uow:
        opp = action(uow)
        uow.commit()
    # After the commit, like a create: a change that ran collision detection holds match-key locks
    # that other look-alike deals wait for.
    _render_committed(opp)
    return opp, 200, _tagged(opp)


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


def create_app():
    return create_service_app(context=context(), title="CRM opportunities service",
                              blueprints=[accounts_blp, deals_blp, report_blp])
