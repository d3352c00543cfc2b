"""Notifications HTTP API: the caller's inbox, agenda and preferences. Everything here is the
caller's own: there is no way to name another person's notifications (one that is not yours is
404). Thin routes: parse, call one use case, commit, render."""
from __future__ import annotations

import datetime as dt
import uuid

from marshmallow import RAISE

from crmkit.auth import ROLES
from crmkit.etag import IF_MATCH, etag_for, require_if_match
from crmkit.pagination import BadQuery
from crmkit.web import Blueprint, create_service_app, ctx, principal, roles

from . import agenda, inbox, preferences, webhooks
from .bootstrap import context
from .schemas import (
    MAX_AGENDA_DAYS,
    AgendaArgsSchema,
    AgendaSchema,
    NotificationListArgsSchema,
    NotificationPageSchema,
    NotificationSchema,
    PreferencesSchema,
    PreferencesWriteSchema,
    ReadAllArgsSchema,
    ReadAllSchema,
    WebhookCreatedSchema,
    WebhookCreateSchema,
    WebhookPageSchema,
    WebhookSchema,
    WebhookSecretSchema,
)

EVERYONE = ROLES
notifications_blp = Blueprint("notifications", __name__, description="Your notifications, agenda and preferences")


@notifications_blp.route("/notifications", methods=["GET"])
@notifications_blp.arguments(NotificationListArgsSchema, location="query", unknown=RAISE)
@notifications_blp.response(200, NotificationPageSchema)
@roles(*EVERYONE)
def list_notifications(args):
    """Your notifications, newest first, with how many are unread (`unread=true` for those only)."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor, unread = inbox.list_notifications(uow, principal(), args)
    return {"items": items, "next_cursor": next_cursor, "unread_count": unread}


@notifications_blp.route("/notifications/<uuid:notification_id>/read", methods=["POST"])
@notifications_blp.response(200, NotificationSchema)
@roles(*EVERYONE)
def read_notification(notification_id: uuid.UUID):
    """Mark one of your notifications read (404 if it is not yours)."""
    with ctx().db.uow() as uow:
        note = inbox.mark_read(uow, principal(), notification_id)
        uow.commit()
        return note


@notifications_blp.route("/notifications/read-all", methods=["POST"])
@notifications_blp.arguments(ReadAllArgsSchema, location="query", unknown=RAISE)
@notifications_blp.response(200, ReadAllSchema)
@roles(*EVERYONE)
def read_all(args):
    """Mark all your notifications read (those raised up to `before`, if given)."""
    with ctx().db.uow() as uow:
        count = inbox.mark_all_read(uow, principal(), args.get("before"))
        uow.commit()
    return {"read": count}


@notifications_blp.route("/agenda", methods=["GET"])
@notifications_blp.arguments(AgendaArgsSchema, location="query", unknown=RAISE)
@notifications_blp.response(200, AgendaSchema)
@roles(*EVERYONE)
def get_agenda(args):
    """Your follow-ups and next contacts due from `from` to `to` (today, in your time zone, by
    default), what is overdue before that, and the approvals waiting for you.

    400 when `to` is not after `from`, or more than 62 days after it.
    """
    with ctx().db.uow(readonly=True) as uow:
        prefs = preferences.of(uow, principal().user_id)
        _day, start, end = agenda.today(prefs, dt.datetime.now(dt.UTC))
        start = args.get("start", start)
        end = args.get("end", start + dt.timedelta(days=1))
        if not start < end <= start + dt.timedelta(days=MAX_AGENDA_DAYS):
            raise BadQuery("`to` must be after `from`, and at most 62 days after it",
                           errors={"to": [f"after `from`, and at most {MAX_AGENDA_DAYS} days after it"]})
        return {**agenda.agenda(uow, principal(), start, end), "time_zone": prefs.time_zone}


@notifications_blp.route("/notification-preferences", methods=["GET"])
@notifications_blp.response(200, PreferencesSchema)
@roles(*EVERYONE)
def get_preferences():
    """How you are told: channels per notification type, quiet hours, digest, address, language."""
    with ctx().db.uow(readonly=True) as uow:
        prefs = preferences.of(uow, principal().user_id)
    return _render(prefs), 200, {"ETag": etag_for(prefs.version)}


@notifications_blp.route("/notification-preferences", methods=["PUT"])
@notifications_blp.arguments(PreferencesWriteSchema)
@notifications_blp.response(200, PreferencesSchema)
@notifications_blp.doc(parameters=[IF_MATCH])
@roles(*EVERYONE)
def put_preferences(document):
    """Replace how you are told. Needs If-Match with the ETag you last read ("v0" before a first save).

    422 for an e-mail address that is not in ASCII at a public domain name, a time zone that is not
    an IANA name, or quiet hours that start and end at the same time.
    """
    with ctx().db.uow() as uow:
        prefs = preferences.save(uow, principal().user_id, document, require_if_match)
        uow.commit()
    return _render(prefs), 200, {"ETag": etag_for(prefs.version)}


webhooks_blp = Blueprint("webhooks", __name__, description="Webhook endpoints (admins): notifications sent to "
                         "outside systems, signed by the Standard Webhooks scheme")


@webhooks_blp.route("/webhooks", methods=["POST"])
@webhooks_blp.arguments(WebhookCreateSchema)
@webhooks_blp.response(201, WebhookCreatedSchema)
@roles("admin")
def create_webhook(fields):
    """Add a webhook endpoint (admin); its signing secret is in the answer, this once.

    422 for a URL the CRM will not call: not https, or at a private, loopback, link-local or
    metadata address (IPv4 or IPv6, also through a name that resolves to one).
    """
    with ctx().db.uow() as uow:
        endpoint, secret = webhooks.create(uow, principal(), fields)
        uow.commit()
        body = _endpoint(endpoint, secret=secret)
    return body, 201, {"Location": f"/api/v1/webhooks/{endpoint.id}"}


@webhooks_blp.route("/webhooks", methods=["GET"])
@webhooks_blp.response(200, WebhookPageSchema)
@roles("admin")
def list_webhooks():
    """The webhook endpoints (admin), oldest first; secrets are never shown again."""
    with ctx().db.uow(readonly=True) as uow:
        return {"items": webhooks.listing(uow), "next_cursor": None}


@webhooks_blp.route("/webhooks/<uuid:endpoint_id>", methods=["GET"])
@webhooks_blp.response(200, WebhookSchema)
@roles("admin")
def get_webhook(endpoint_id: uuid.UUID):
    """One webhook endpoint (admin), with how many of its deliveries are pending, sent and failed."""
    with ctx().db.uow(readonly=True) as uow:
        endpoint = webhooks.get(uow, endpoint_id)
        return _endpoint(endpoint, deliveries=webhooks.counts(uow, endpoint.id))


@webhooks_blp.route("/webhooks/<uuid:endpoint_id>", methods=["DELETE"])
@webhooks_blp.response(204)
@roles("admin")
def delete_webhook(endpoint_id: uuid.UUID):
    """Remove a webhook endpoint (admin): nothing more is sent to it; what waited is cancelled."""
    with ctx().db.uow() as uow:
        webhooks.delete(uow, endpoint_id)
        uow.commit()


@webhooks_blp.route("/webhooks/<uuid:endpoint_id>/rotate-secret", methods=["POST"])
@webhooks_blp.response(200, WebhookSecretSchema)
@roles("admin")
def rotate_webhook_secret(endpoint_id: uuid.UUID):
    """Give a webhook endpoint a new secret (admin); the old one keeps signing for a day beside it."""
    with ctx().db.uow() as uow:
        _endpoint, secret, until = webhooks.rotate(uow, endpoint_id)
        uow.commit()
    return {"secret": secret, "previous_valid_until": until}


def _endpoint(endpoint, **extra) -> dict:
    return {**{name: getattr(endpoint, name) for name in WebhookSchema().fields if hasattr(endpoint, name)}, **extra}


def _render(prefs: preferences.Preferences) -> dict:
    return {"user_id": prefs.user_id, "email": prefs.email, "language": prefs.language, "time_zone": prefs.time_zone,
            "channels": {k: list(v) for k, v in prefs.channels.items()}, "quiet_hours": prefs.quiet_hours,
            "digest": prefs.digest, "agenda_email": prefs.agenda_email, "version": prefs.version}


def create_app():
    return create_service_app(context=context(), title="CRM notifications service", blueprints=[notifications_blp, webhooks_blp])
