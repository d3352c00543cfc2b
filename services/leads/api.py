"""Leads HTTP API: thin routes that parse, call the service layer, commit and render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.activities import ActivityCreateSchema
from crmkit.etag import IF_MATCH, etag_for, require_if_match, tagged
from crmkit.idempotency import idempotent
from crmkit.pagination import PageArgsSchema
from crmkit.periods import PeriodArgsSchema
from crmkit.web import Blueprint, create_service_app, ctx, large_body, principal, roles, uploaded_csv

from . import conversion, imports, intake, lifecycle, people, routing, rules
from .bootstrap import context
from .domain import WORKING_ROLES
from .schemas import (
    ActivityPageSchema,
    ActivitySchema,
    AssignmentRulesSchema,
    ConvertedSchema,
    ConvertSchema,
    DuplicateClaimPageSchema,
    ImportAcceptedSchema,
    ImportJobSchema,
    LeadCreatedSchema,
    LeadCreateSchema,
    LeadFunnelSchema,
    LeadListArgsSchema,
    LeadPageSchema,
    LeadPatchSchema,
    LeadSchema,
    ReassignSchema,
    ScoringRulesSchema,
)

blp = Blueprint("leads", __name__, description="Leads: the top of the funnel")
rules_blp = Blueprint("lead-rules", __name__, description="How leads are scored and assigned")

LEAD_ROLES = ("rep", "manager", "executive", "marketing", "admin")
RULE_READERS = ("manager", "executive", "marketing", "admin")



@blp.route("/leads", methods=["POST"])
@blp.arguments(LeadCreateSchema)
@idempotent  # outside @response, so it stores and replays the rendered response
@blp.response(201, LeadCreatedSchema)
@blp.alt_response(200, schema=LeadCreatedSchema, description="A duplicate, merged into the existing lead")
@roles(*LEAD_ROLES)
def create_lead(fields):
    """Create a lead, or merge it into the one it duplicates, or claim another owner's."""
    with ctx().db.uow() as uow:
        result = intake.create_lead(uow, ctx().settings, principal(), fields)
        uow.commit()
        lead = result.lead
        if result.claim is not None:
            # Someone else's lead: nothing was written into it. Say so, and whom to ask, and show
            # nothing of it (CONTRACT §2, the collision rule).
            return {"id": lead.id, "merged": False, "claimed": True, "owned_elsewhere": True,
                    "claim_id": result.claim.id, "owner_id": lead.owner_id,
                    "manager_id": people.manager_of(uow, lead)}, 200
        lead.merged = result.merged
        if not result.merged:
            return lead, 201, {**tagged(lead), "Location": f"/api/v1/leads/{lead.id}"}
    return lead, 200, tagged(lead)


@blp.route("/leads/<uuid:lead_id>/duplicate-claims", methods=["GET"])
@blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@blp.response(200, DuplicateClaimPageSchema)
@roles(*WORKING_ROLES)
def list_duplicate_claims(args, lead_id: uuid.UUID):
    """Who else brought this lead's prospect, and what they brought (its owner and their managers)."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = intake.list_claims(uow, principal(), lead_id, args)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/leads", methods=["GET"])
@blp.arguments(LeadListArgsSchema, location="query", unknown=RAISE)
@blp.response(200, LeadPageSchema)
@roles(*LEAD_ROLES)
def list_leads(args):
    """List the leads you may see, newest first by default, with filters and a cursor.

    `cursor` is opaque: only a `next_cursor` this API answered.
    """
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = lifecycle.list_leads(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/leads/<uuid:lead_id>", methods=["GET"])
@blp.response(200, LeadSchema)
@roles(*LEAD_ROLES)
def get_lead(lead_id: uuid.UUID):
    """Read one lead."""
    with ctx().db.uow(readonly=True) as uow:
        lead = lifecycle.get_lead(uow, principal(), lead_id)
    return lead, 200, tagged(lead)


@blp.route("/leads/<uuid:lead_id>", methods=["PATCH"])
@blp.arguments(LeadPatchSchema)
@blp.response(200, LeadSchema)
@blp.doc(parameters=[IF_MATCH])
@roles(*LEAD_ROLES)
def patch_lead(changes, lead_id: uuid.UUID):
    """Change a lead's fields (its owner or their leader).

    Needs If-Match with the ETag you last read (428 without it, 412 when stale).
    """
    with ctx().db.uow() as uow:
        lead = lifecycle.update_lead(uow, ctx().settings, principal(), lead_id, changes, require_if_match)
        uow.commit()
    return lead, 200, tagged(lead)


@blp.route("/leads/<uuid:lead_id>", methods=["DELETE"])
@blp.response(204)
@roles(*LEAD_ROLES)
def delete_lead(lead_id: uuid.UUID):
    """Delete a lead (soft; its owner or their leader)."""
    with ctx().db.uow() as uow:
        lifecycle.delete_lead(uow, ctx().settings, principal(), lead_id)
        uow.commit()


@blp.route("/leads/<uuid:lead_id>/activities", methods=["POST"])
@blp.arguments(ActivityCreateSchema)
@idempotent
@blp.response(201, ActivitySchema)
@roles(*LEAD_ROLES)
def log_activity(data, lead_id: uuid.UUID):
    """Log a call, visit or e-mail on a lead; it moves the follow-up date."""
    with ctx().db.uow() as uow:
        activity = lifecycle.log_activity(uow, ctx().settings, principal(), lead_id, data)
        uow.commit()
    return activity


@blp.route("/leads/<uuid:lead_id>/activities", methods=["GET"])
@blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@blp.response(200, ActivityPageSchema)
@roles(*LEAD_ROLES)
def list_activities(args, lead_id: uuid.UUID):
    """List a lead's activities, newest first."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = lifecycle.list_activities(uow, principal(), lead_id, args)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/leads/<uuid:lead_id>/convert", methods=["POST"])
@blp.arguments(ConvertSchema)
@idempotent
@blp.response(202, ConvertedSchema)
@roles(*LEAD_ROLES)
def convert_lead(data, lead_id: uuid.UUID):
    """Convert a qualified lead into an account, a contact and an opportunity (202: the opportunities service creates them)."""
    with ctx().db.uow() as uow:
        ids = conversion.convert_lead(uow, ctx().settings, principal(), lead_id, data)
        uow.commit()
    return ids, 202, {"Location": f"/api/v1/opportunities/{ids['opportunity_id']}"}


@blp.route("/leads/<uuid:lead_id>/assign", methods=["POST"])
@blp.arguments(ReassignSchema)
@blp.response(200, LeadSchema)
@roles("manager", "executive", "admin")
def reassign_lead(target, lead_id: uuid.UUID):
    """Give a lead to a team or a user (a leader).

    Name exactly one of `team_id` and `user_id`; a user must be an active rep of your teams.
    """
    with ctx().db.uow() as uow:
        lead = routing.reassign(uow, ctx().settings, principal(), lead_id, target)
        uow.commit()
    return lead, 200, tagged(lead)


@blp.route("/leads/import", methods=["POST"])
@blp.response(202, ImportAcceptedSchema)
@blp.doc(requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {
        "type": "string", "format": "binary", "minLength": 1,
        "description": "the CSV (UTF-8, a header row; up to LEADS_IMPORT_MAX_ROWS rows)"}}}}}})
@roles(*LEAD_ROLES)
@large_body
def import_leads():
    """Import leads from a CSV file (202: a job; read its progress at the Location).

    The file must be text in UTF-8 or GB18030 with a header row, and not empty.
    """
    filename, content = uploaded_csv()
    with ctx().db.uow() as uow:
        job = imports.create_job(uow, principal(), filename, content)
        uow.commit()
    return {"job_id": job.id}, 202, {"Location": f"/api/v1/lead-imports/{job.id}"}


@blp.route("/lead-imports/<uuid:job_id>", methods=["GET"])
@blp.response(200, ImportJobSchema)
@roles(*LEAD_ROLES)
def get_import(job_id: uuid.UUID):
    """Where an import job stands: rows done, created, merged, claimed, failed (and why)."""
    with ctx().db.uow(readonly=True) as uow:
        return imports.get_job(uow, principal(), job_id)


@blp.route("/reports/lead-funnel", methods=["GET"])
@blp.arguments(PeriodArgsSchema, location="query", unknown=RAISE)
@blp.response(200, LeadFunnelSchema)
@roles(*LEAD_ROLES)
def lead_funnel(args):
    """The lead half of the funnel, over the leads the caller may see."""
    with ctx().db.uow(readonly=True) as uow:
        return lifecycle.lead_funnel(uow, principal(), args["period"])


def _rules_routes(path: str, name: str, schema, writers: tuple[str, ...]) -> None:
    @rules_blp.route(path, methods=["GET"], endpoint=f"get_{name}_rules")
    @rules_blp.response(200, schema)
    @roles(*RULE_READERS)
    def get_rules():
        """Read the rule document (its ETag is the version to send back)."""
        with ctx().db.uow(readonly=True) as uow:
            doc = rules.get_rule_document(uow, name)
        return doc, 200, {"ETag": etag_for(doc["version"])}

    @rules_blp.route(path, methods=["PUT"], endpoint=f"put_{name}_rules")
    @rules_blp.arguments(schema)
    @rules_blp.response(200, schema)
    @rules_blp.doc(parameters=[IF_MATCH])
    @roles(*writers)
    def put_rules(body):
        """Replace the rule document.

        Needs If-Match with the ETag you last read.
        """
        with ctx().db.uow() as uow:
            doc = rules.put_rule_document(uow, ctx().settings, principal(), name, body, require_if_match)
            uow.commit()
        return doc, 200, {"ETag": etag_for(doc["version"])}


_rules_routes("/lead-scoring-rules", rules.SCORING, ScoringRulesSchema, ("marketing", "admin"))
_rules_routes("/lead-assignment-rules", rules.ASSIGNMENT, AssignmentRulesSchema, ("admin",))


def create_app():
    return create_service_app(context=context(), title="CRM leads service", blueprints=[blp, rules_blp])

