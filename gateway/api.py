"""The gateway's HTTP surface: identity and directory, handovers, composed views and the merged API
docs (CONTRACT §1-§4). It is one upstream behind the edge (HAProxy, gateway/edge.py), which sends
every other route straight to the service that owns it."""
from __future__ import annotations

import uuid

from flask import Response, g, request
from marshmallow import RAISE
from werkzeug.middleware.proxy_fix import ProxyFix

from crmkit.etag import IF_MATCH, etag_for, require_if_match
from crmkit.idempotency import idempotent
from crmkit.pagination import PageArgsSchema
from crmkit.periods import PeriodArgsSchema
from crmkit.web import SWAGGER_UI_URL, Blueprint, create_service_app, ctx, principal

from . import compose, services, sign_in
from .bootstrap import context, gateway
from .gate import client_address
from .openapi import DOCS_HTML, SpecMerger
from .schemas import (
    CustomerSchema,
    FunnelSchema,
    HandoverAcceptedSchema,
    HandoverRequestSchema,
    HandoverSchema,
    MeSchema,
    TeamPageSchema,
    TeamPatchSchema,
    TeamSchema,
    TokenRequestSchema,
    TokenSchema,
    UserListArgsSchema,
    UserPageSchema,
    UserPatchSchema,
    UserSchema,
)

auth_blp = Blueprint("auth", __name__, description="Sign in, and who am I")
directory_blp = Blueprint("directory", __name__, description="Users and teams (admin), and handovers")
views_blp = Blueprint("views", __name__, description="Views composed from several services")


# ---- identity -------------------------------------------------------------------------------------
@auth_blp.route("/auth/token", methods=["POST"])
@auth_blp.arguments(TokenRequestSchema)
@auth_blp.response(200, TokenSchema)
def token(credentials):
    """Exchange a username and password for a short-lived bearer token."""
    # The edge limits sign-in requests per address; here, failures per address and name (guessing
    # one user's password), counted in the database every gateway replica shares.
    key = sign_in.attempt_key(client_address(), credentials["username"])

    def attempt(uow):
        user = services.authenticate(uow, credentials["username"], credentials["password"])
        return services.issue_for(uow, ctx().settings, gateway().config, user)

    return sign_in.sign_in(ctx().db, gateway().sign_in, key, attempt), 200, {"Cache-Control": "no-store"}


@auth_blp.route("/me", methods=["GET"])
@auth_blp.response(200, MeSchema)
def me():
    """Who the token says you are, as the directory knows you now."""
    with ctx().db.uow(readonly=True) as uow:
        return services.me(uow, principal())


# ---- directory ------------------------------------------------------------------------------------
def _etag(record) -> dict:
    return {"ETag": etag_for(record.version)}


@directory_blp.route("/users", methods=["POST"])
@directory_blp.arguments(UserSchema)
@idempotent
@directory_blp.response(201, UserSchema)
def create_user(data):
    """Create a user (admin)."""
    with ctx().db.uow() as uow:
        user = services.create_user(uow, ctx().settings, principal().user_id, data)
        uow.commit()
    return user, 201, {**_etag(user), "Location": f"/api/v1/users/{user.id}"}


@directory_blp.route("/users", methods=["GET"])
@directory_blp.arguments(UserListArgsSchema, location="query", unknown=RAISE)
@directory_blp.response(200, UserPageSchema)
def list_users(args):
    """List users (admin)."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = services.list_users(uow, args)
    return {"items": items, "next_cursor": next_cursor}


@directory_blp.route("/users/<uuid:user_id>", methods=["GET"])
@directory_blp.response(200, UserSchema)
def get_user(user_id: uuid.UUID):
    """Read one user (admin)."""
    with ctx().db.uow(readonly=True) as uow:
        user = services.get_user(uow, user_id)
    return user, 200, _etag(user)


@directory_blp.route("/users/<uuid:user_id>", methods=["PATCH"])
@directory_blp.arguments(UserPatchSchema)
@directory_blp.response(200, UserSchema)
@directory_blp.doc(parameters=[IF_MATCH])
def patch_user(changes, user_id: uuid.UUID):
    """Change a user; `"active": false` deactivates (their tokens stop working at once)."""
    with ctx().db.uow() as uow:
        user = services.update_user(uow, ctx().settings, principal().user_id, user_id, changes, require_if_match)
        uow.commit()
    return user, 200, _etag(user)


@directory_blp.route("/teams", methods=["POST"])
@directory_blp.arguments(TeamSchema)
@idempotent
@directory_blp.response(201, TeamSchema)
def create_team(data):
    """Create a team (admin)."""
    with ctx().db.uow() as uow:
        team = services.create_team(uow, ctx().settings, principal().user_id, data)
        uow.commit()
    return team, 201, {**_etag(team), "Location": f"/api/v1/teams/{team.id}"}


@directory_blp.route("/teams", methods=["GET"])
@directory_blp.arguments(PageArgsSchema, location="query", unknown=RAISE)
@directory_blp.response(200, TeamPageSchema)
def list_teams(args):
    """List teams (admin)."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = services.list_teams(uow, args)
    return {"items": items, "next_cursor": next_cursor}


@directory_blp.route("/teams/<uuid:team_id>", methods=["GET"])
@directory_blp.response(200, TeamSchema)
def get_team(team_id: uuid.UUID):
    """Read one team (admin)."""
    with ctx().db.uow(readonly=True) as uow:
        team = services.get_team(uow, team_id)
    return team, 200, _etag(team)


@directory_blp.route("/teams/<uuid:team_id>", methods=["PATCH"])
@directory_blp.arguments(TeamPatchSchema)
@directory_blp.response(200, TeamSchema)
@directory_blp.doc(parameters=[IF_MATCH])
def patch_team(changes, team_id: uuid.UUID):
    """Change a team: name, manager, parent, region (admin).

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        team = services.update_team(uow, ctx().settings, principal().user_id, team_id, changes, require_if_match)
        uow.commit()
    return team, 200, _etag(team)


@directory_blp.route("/users/<uuid:user_id>/handover", methods=["POST"])
@directory_blp.arguments(HandoverRequestSchema)
@idempotent
@directory_blp.response(202, HandoverAcceptedSchema)
def hand_over(data, user_id: uuid.UUID):
    """Move a leaver's open records to a colleague, in every service that owns records."""
    with ctx().db.uow() as uow:
        handover = services.request_handover(uow, ctx().settings, gateway().config, principal(), user_id,
                                             data["to_user_id"])
        uow.commit()
    return {"handover_id": handover.id}, 202, {"Location": f"/api/v1/handovers/{handover.id}"}


@directory_blp.route("/handovers/<uuid:handover_id>", methods=["GET"])
@directory_blp.response(200, HandoverSchema)
def get_handover(handover_id: uuid.UUID):
    """Where a handover stands, service by service."""
    with ctx().db.uow(readonly=True) as uow:
        return services.get_handover(uow, principal(), handover_id)


# ---- composed views -------------------------------------------------------------------------------
def _fetcher() -> compose.Fetcher:
    headers = {"Authorization": request.headers["Authorization"], "X-Request-ID": g.request_id,
               "Accept": "application/json"}
    return compose.Fetcher(gateway().upstreams, gateway().parts_pool, headers)


@views_blp.route("/customers/<uuid:account_id>", methods=["GET"])
@views_blp.response(200, CustomerSchema)
def customer(account_id: uuid.UUID):
    """One customer for every department, each part filtered by what the caller may see."""
    return compose.customer_view(_fetcher(), str(account_id))


@views_blp.route("/reports/funnel", methods=["GET"])
@views_blp.arguments(PeriodArgsSchema, location="query", unknown=RAISE)
@views_blp.response(200, FunnelSchema)
def funnel(args):
    """Leads → qualified → opportunities → won in a period, with conversion rates."""
    return compose.funnel(_fetcher(), args["period"].label)


# ---- the app --------------------------------------------------------------------------------------
def create_app():
    gw = gateway()
    app = create_service_app(context=context(), title="CRM gateway", blueprints=[auth_blp, directory_blp, views_blp],
                             openapi_json_path="gateway-openapi.json", docs_path=None)
    own_spec = app.extensions["crm_api"].spec.to_dict
    merger = SpecMerger(gw.upstreams, gw.policy, own_spec, gw.config.openapi_cache_seconds)

    @app.get("/openapi.json")
    def openapi():
        return merger.document()

    @app.get("/docs")
    def docs():
        return Response(DOCS_HTML.format(ui=SWAGGER_UI_URL), mimetype="text/html")

    if gw.config.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=gw.config.trusted_proxies, x_proto=gw.config.trusted_proxies)
    return app

