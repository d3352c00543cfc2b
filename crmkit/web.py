"""Flask app factory shared by every service API.

Gives each API: problem+json for every failure (never Flask's HTML), X-Request-ID in and out
and in every log line, bearer-token authentication, JSON-only bodies with size limits,
per-route metrics, and /healthz, /readyz, /metrics, /openapi.json, /docs.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from http import HTTPStatus

from flask import Flask, Response, current_app, g, request
from flask_smorest import Api
from flask_smorest import Blueprint as _SmorestBlueprint
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields, missing
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException

from . import metrics
from .auth import Principal, TokenVerifier, Unauthorized
from .db import Database, database_reachable
from .errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    StaleVersion,
    ValidationFailed,
    VersionRequired,
)
from .kafka import kafka_reachable
from .logging import request_id_var
from .problems import Problem
from .settings import Settings
from .text import unpaired_surrogate_at

log = logging.getLogger(__name__)
access_log = logging.getLogger("crm.access")

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
PROBLEM_JSON = "application/problem+json"
SWAGGER_UI_URL = "https://cdn.jsdelivr.net/npm/swagger-ui-dist/"


@dataclass
class ServiceContext:
    """What a service's routes need, found at `current_app.extensions['crm']`."""

    settings: Settings
    db: Database
    tables: dict
    verifier: TokenVerifier
    readiness: list[Callable[[], bool]] = field(default_factory=list)
    # Paths (prefixes) that need no token besides the health, metrics and docs endpoints.
    public_paths: tuple[str, ...] = ()
    # Called on every authenticated request with the caller (e.g. the route policy); raises a Problem
    # to refuse, and may answer the caller as it knows them (a service's directory replica does).
    authorize: Callable[[Principal], Principal | None] | None = None


def ctx() -> ServiceContext:
    return current_app.extensions["crm"]


def principal() -> Principal:
    return g.principal


# The one place a domain error becomes HTTP (CONTRACT §3).
DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404, Forbidden: 403, Conflict: 409, ValidationFailed: 422, StaleVersion: 412, VersionRequired: 428,
}


def problem_of(error: DomainError) -> Problem:
    status = next(code for kind, code in DOMAIN_STATUS.items() if isinstance(error, kind))
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return Problem(error.detail, status=status, errors=error.errors, headers=headers)


def problem_response(problem: Problem) -> Response:
    resp = Response(json.dumps(problem.to_dict(), ensure_ascii=False), status=problem.status, mimetype=PROBLEM_JSON)
    for k, v in problem.headers.items():
        resp.headers[k] = v
    return resp


def _problem_from_http_exception(exc: HTTPException) -> Problem:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") or {}
    errors: dict = {}
    for location, found in messages.items():
        if isinstance(found, dict):
            errors.update({k: v if isinstance(v, list) else [v] for k, v in found.items()})
        else:
            errors.setdefault("body" if location == "json" else location,
                              found if isinstance(found, list) else [found])
    if status == 422 and set(messages) - {"json", "form", "files"}:
        status = 400  # CONTRACT §3: a bad query string is 400, a bad body 422
    detail = {
        400: "the request is malformed",
        404: "no such resource",
        405: f"method {request.method} is not allowed here",
        413: "request body too large",
        415: "send a JSON body with Content-Type: application/json",
        422: "the request body failed validation",
    }.get(status, exc.description)
    if status in (400, 422) and errors:
        detail = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in errors.items())[:1000]
    problem = Problem(detail, status=status, errors=errors or None)
    valid_methods = getattr(exc, "valid_methods", None)
    if status == 405 and valid_methods:
        problem.headers["Allow"] = ", ".join(valid_methods)
    return problem


def _refuse_unstorable_text() -> None:
    """422 for a JSON body with a lone UTF-16 surrogate anywhere in it (crmkit.text), before any route
    or database sees it. A body that is not JSON at all is left to the route's parser (400)."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly deep nesting: the route's parser answers 400
        return
    where = unpaired_surrogate_at(body) if body is not None else None
    if where is not None:
        raise Problem(f"{where}: text holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)", status=422,
                      errors={where: ["unpaired UTF-16 surrogate"]})


_DRAIN_LIMIT = 64 * 1024 * 1024


def _drain_oversized_body() -> None:
    """Read and discard a too-large body (up to a bound) so the client, still sending, receives the
    413 instead of a connection reset; past the bound the connection is simply closed."""
    length = request.content_length or 0
    if 0 < length <= _DRAIN_LIMIT:
        stream = request.environ["wsgi.input"]
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(remaining, 1024 * 1024))
            if not chunk:
                break
            remaining -= len(chunk)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


class _JsonParser(FlaskParser):
    """Strict JSON bodies. webargs turns only JSONDecodeError into a 400, so bodies that look valid
    but cannot be decoded (integers past Python's digit limit, absurd nesting) became 500s; and
    Python's json accepts NaN and Infinity, which are not JSON and break every comparison."""

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return missing
        try:
            return json.loads(req.get_data(cache=True).decode("utf-8"), parse_constant=_not_json)
        except json.JSONDecodeError:
            raise
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not UTF-8: {exc.reason}", doc="?", pos=exc.start) from None
        except (ValueError, RecursionError) as exc:
            raise json.JSONDecodeError(f"undecodable JSON: {str(exc)[:100]}", doc="?", pos=0) from None


class Blueprint(_SmorestBlueprint):
    """flask-smorest's Blueprint with the stricter JSON parser; services use this one."""

    ARGUMENTS_PARSER = _JsonParser()


class ProblemSchema(Schema):
    """An error as every service and the gateway answer it (RFC 9457, CONTRACT §3)."""
    type = fields.String(required=True, metadata={"example": "https://sfa-crm.dev/problems/422"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "what is wrong with which field"})


class ProblemApi(Api):
    """flask-smorest's Api, with its JSON errors replaced by problem+json, in the answers and in the
    document: every operation's error responses (its `default` and the statuses it names) say
    application/problem+json with the problem schema."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        for status in HTTPStatus:
            response = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error, as problem+json", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def handle_http_exception(self, error):
        if error.code == 413:
            _drain_oversized_body()
        return problem_response(_problem_from_http_exception(error))


def roles(*allowed: str):
    """Route-level role policy; a role outside it gets 403 (rows are filtered separately).

    The app checks it right after authentication, before the body is parsed (so a role that may not
    use the route gets 403, not a 422 about its body); the wrapper checks again where it runs."""

    def deco(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if principal().role not in allowed:
                raise Forbidden(f"role {principal().role!r} may not use this route")
            return view(*args, **kwargs)

        wrapper.crm_roles = frozenset(allowed)  # functools.wraps carries it out to the registered view
        return wrapper

    return deco


def uploaded_csv() -> tuple[str | None, bytes]:
    """(file name, bytes) of the CSV a client sent as multipart/form-data in a field named `file`;
    422 when it is missing or empty."""
    upload = request.files.get("file")
    if upload is None:
        raise ValidationFailed("send the CSV as multipart/form-data in a field named 'file'",
                               errors={"file": ["missing"]})
    content = upload.read()
    if not content:
        raise ValidationFailed("the file is empty", errors={"file": ["empty"]})
    return upload.filename, content


def large_body(view):
    """Marks a route that takes uploads up to CRM_MAX_IMPORT_BYTES, in any content type."""
    view.crm_large_body = True
    return view


def create_service_app(*, context: ServiceContext, title: str, blueprints: list, version: str = "1.0.0",
                       openapi_json_path: str = "openapi.json", docs_path: str | None = "docs") -> Flask:
    app = Flask(context.settings.service)
    app.config.update(
        API_TITLE=title, API_VERSION=version, OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH=openapi_json_path,
        OPENAPI_SWAGGER_UI_PATH=docs_path, OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_URL,
        MAX_CONTENT_LENGTH=context.settings.max_import_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.ensure_ascii = False  # UTF-8 on the wire: 华东, not \u534e\u4e1c
    app.json.sort_keys = False
    app.extensions["crm"] = context
    api = ProblemApi(app, spec_kwargs={"components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}]})
    for bp in blueprints:
        api.register_blueprint(bp, url_prefix="/api/v1")
    app.extensions["crm_api"] = api

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")[:200] or str(uuid.uuid4())
        g.request_id = rid
        g.request_id_token = request_id_var.set(rid)
        if request.method == "OPTIONS":
            return None  # CORS preflight carries no token; it is answered without touching a route
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        large = bool(view and getattr(view, "crm_large_body", False))
        request.max_content_length = context.settings.max_import_bytes if large else context.settings.max_body_bytes
        if request.path.startswith(PUBLIC_PATHS) or request.endpoint is None:
            return None
        if request.path.startswith(context.public_paths):
            if request.method in ("POST", "PUT", "PATCH") and request.is_json:
                _refuse_unstorable_text()  # the sign-in route, too
            return None
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise Unauthorized("missing bearer token")
        g.principal = context.verifier.verify(header[7:].strip())
        if context.authorize is not None:
            g.principal = context.authorize(g.principal) or g.principal
        allowed = getattr(view, "crm_roles", None)
        if allowed is not None and g.principal.role not in allowed:
            raise Forbidden(f"role {g.principal.role!r} may not use this route")
        if request.method in ("POST", "PUT", "PATCH") and not large and (request.content_length or request.data):
            if not request.is_json:
                raise Problem("send a JSON body with Content-Type: application/json", status=415)
            _refuse_unstorable_text()
        return None

    @app.after_request
    def _finish(resp: Response):
        resp.headers["X-Request-ID"] = g.get("request_id", "")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(context.settings.service, route, request.method, str(resp.status_code)).inc()
        if "started" in g:
            elapsed = time.perf_counter() - g.started
            metrics.HTTP_LATENCY.labels(context.settings.service, route, request.method).observe(elapsed)
            # One access line per request, carrying the request id (the JSON formatter adds it), so a
            # request can be followed from the gateway into every service it touched.
            if not request.path.startswith(("/healthz", "/readyz", "/metrics")):
                access_log.info("%s %s %s", request.method, request.path, resp.status_code, extra={
                    "status": resp.status_code, "duration_ms": round(elapsed * 1000, 1),
                    "user": g.principal.user_id if "principal" in g else None})
        return resp

    @app.teardown_request
    def _reset(_exc):
        token = g.pop("request_id_token", None)
        if token is not None:
            request_id_var.reset(token)

    @app.errorhandler(Problem)
    def _problem(exc: Problem):
        return problem_response(exc)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        return problem_response(problem_of(exc))

    @app.errorhandler(IntegrityError)
    def _integrity(_exc):
        # Two requests raced to create the same row (a first rules document, a first cursor).
        return problem_response(Problem("a concurrent change conflicted with this one; read again and retry",
                                        status=409))

    @app.errorhandler(DataError)
    def _out_of_range(exc):
        # A value the domain should have refused reached a column too small for it (PostgreSQL says
        # so; SQLite stores it). The client's input, so a 422, and a warning for us to add the check.
        log.warning("a value reached the database out of range: %r", exc)
        return problem_response(Problem("a value is out of the range this API can store", status=422))

    @app.errorhandler(OperationalError)
    def _database_down(exc):
        # The database is unreachable or overloaded: the service's trouble, not the client's.
        log.warning("database unavailable: %r", exc)
        return problem_response(Problem("the service's database is unavailable; retry shortly", status=503,
                                        headers={"Retry-After": "5"}))

    @app.errorhandler(StaleDataError)
    def _stale(_exc):
        # version_id_col saw the row change between our read and our UPDATE.
        return problem_response(Problem("the record changed since you read it; read it again and retry",
                                        status=412))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return problem_response(_problem_from_http_exception(exc))
        log.exception("unhandled error")
        return problem_response(Problem("an unexpected error occurred; it has been logged", status=500))

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "service": context.settings.service, "part": "api"}

    @app.get("/readyz")
    def readyz():
        checks = {"database": database_reachable(context.db.engine),
                  "kafka": kafka_reachable(context.settings.kafka_bootstrap_servers)}
        for check in context.readiness:
            checks[check.__name__] = bool(check())
        ok = all(checks.values())
        return {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503

    @app.get("/metrics")
    def metrics_endpoint():
        if os.environ.get("CRM_METRICS_PORT"):  # served on that port instead (gunicorn_conf.when_ready)
            return problem_response(Problem("no such resource", status=404))
        body, ctype = metrics.metrics_payload()
        return Response(body, mimetype=ctype.split(";")[0], headers={"Content-Type": ctype})

    return app
