"""What the gateway publishes (crm.directory.v1) and consumes (each service's handover.completed)."""
from __future__ import annotations

from crmkit.directory_events import (
    HANDOVER_REQUESTED,
    TEAM_EVENTS,
    USER_EVENTS,
    HandoverRequestedV1,
    TeamEventV1,
    UserEventV1,
)
from crmkit.eventschema import Catalog
from crmkit.settings import Settings

from . import SERVICE

DIRECTORY_TOPIC = "crm.directory.v1"
TOPIC_PARTITIONS = {DIRECTORY_TOPIC: 3}
# Where each record-owning service announces handover.completed (CONTRACT §5).
SERVICE_TOPICS = {"leads": "crm.leads.v1", "opportunities": "crm.opportunities.v1", "orders": "crm.orders.v1"}

DIRECTORY = Catalog(SERVICE, DIRECTORY_TOPIC, "The directory: users, teams and handovers. Every service keeps a "
                    "replica of users and teams from it; each record-owning service answers handover.requested "
                    "with handover.completed on its own topic.", partitions=TOPIC_PARTITIONS[DIRECTORY_TOPIC])
_SUMMARIES = {"user.created": "A user was created.", "user.updated": "A user changed (role, team, password, ...).",
              "user.deactivated": "A user was deactivated: every service refuses their tokens.",
              "team.created": "A team was created.", "team.updated": "A team changed (its manager, its parent)."}
for _kind in USER_EVENTS:
    DIRECTORY.define(_kind, UserEventV1, subject="user id", summary=_SUMMARIES[_kind])
for _kind in TEAM_EVENTS:
    DIRECTORY.define(_kind, TeamEventV1, subject="team id", summary=_SUMMARIES[_kind])
DIRECTORY.define(HANDOVER_REQUESTED, HandoverRequestedV1, subject="the leaver's user id (their user.* events' key)",
                 summary="Move a leaver's open records to a successor (docs/handover.md).")


def user_data(user) -> dict:
    """The shape every service's directory replica reads (docs/events.md). Never the password hash."""
    return {"user": {"id": str(user.id), "username": user.username, "name": user.name, "role": user.role,
                     "team_id": str(user.team_id) if user.team_id else None, "region": user.region,
                     "active": user.active, "token_version": user.token_version}}


def team_data(team) -> dict:
    return {"team": {"id": str(team.id), "name": team.name,
                     "manager_id": str(team.manager_id) if team.manager_id else None,
                     "parent_team_id": str(team.parent_team_id) if team.parent_team_id else None,
                     "region": team.region}}


def directory_event(settings: Settings, event_type: str, subject, data: dict, *, actor) -> tuple[str, dict]:
    return DIRECTORY.event(settings, event_type, subject, data, actor=actor)
