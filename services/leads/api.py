"""Leads HTTP API: thin routes that parse, call the service layer, commit and render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import etag_for, require_if_match
from crmkit.idempotency import idempotent
from crmkit.web import Blueprint, create_service_app, ctx, principal, roles

from . import services
from .bootstrap import context
from .schemas import (
    LeadCreatedSchema,
    LeadCreateSchema,
    LeadListArgsSchema,
    LeadPageSchema,
    LeadPatchSchema,
    LeadSchema,
)

blp = Blueprint("leads", __name__, description="Leads: the top of the funnel")

LEAD_ROLES = ("rep", "manager", "executive", "marketing", "admin")
CREATING_ROLES = LEAD_ROLES


def _headers(lead) -> dict:
    return {"ETag": etag_for(lead.version)}


@blp.route("/leads", methods=["POST"])
@blp.arguments(LeadCreateSchema)
@idempotent  # outside @response, so it stores and replays the rendered response
@blp.response(201, LeadCreatedSchema)
@roles(*CREATING_ROLES)
def create_lead(fields):
    with ctx().db.uow() as uow:
        lead = services.create_lead(uow, ctx().settings, principal(), fields)
        uow.commit()
    return lead, 201, {**_headers(lead), "Location": f"/api/v1/leads/{lead.id}"}


@blp.route("/leads", methods=["GET"])
@blp.arguments(LeadListArgsSchema, location="query", unknown=RAISE)
@blp.response(200, LeadPageSchema)
@roles(*LEAD_ROLES)
def list_leads(args):
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = services.list_leads(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor}


@blp.route("/leads/<uuid:lead_id>", methods=["GET"])
@blp.response(200, LeadSchema)
@roles(*LEAD_ROLES)
def get_lead(lead_id: uuid.UUID):
    with ctx().db.uow(readonly=True) as uow:
        lead = services.get_lead(uow, principal(), lead_id)
    return lead, 200, _headers(lead)


@blp.route("/leads/<uuid:lead_id>", methods=["PATCH"])
@blp.arguments(LeadPatchSchema)
@blp.response(200, LeadSchema)
@roles(*LEAD_ROLES)
def patch_lead(changes, lead_id: uuid.UUID):
    with ctx().db.uow() as uow:
        lead = services.update_lead(uow, ctx().settings, principal(), lead_id, changes, require_if_match)
        uow.commit()
    return lead, 200, _headers(lead)


@blp.route("/leads/<uuid:lead_id>", methods=["DELETE"])
@blp.response(204)
@roles(*LEAD_ROLES)
def delete_lead(lead_id: uuid.UUID):
    with ctx().db.uow() as uow:
        services.delete_lead(uow, ctx().settings, principal(), lead_id)
        uow.commit()


def create_app():
    return create_service_app(context=context(), title="CRM leads service", blueprints=[blp])
