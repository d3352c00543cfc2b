"""What the gateway publishes (crm.directory.v1) and consumes (each service's handover.completed)."""
from __future__ import annotations

from crmkit.events import new_event
from crmkit.settings import Settings

from . import SERVICE

DIRECTORY_TOPIC = "crm.directory.v1"
TOPIC_PARTITIONS = {DIRECTORY_TOPIC: 3}
# Where each record-owning service announces handover.completed (CONTRACT §5).
SERVICE_TOPICS = {"leads": "crm.leads.v1", "opportunities": "crm.opportunities.v1", "orders": "crm.orders.v1"}
HANDOVER_COMPLETED = "handover.completed"


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
    return settings.topic(DIRECTORY_TOPIC), new_event(event_type, subject, data, source=SERVICE, actor=actor)
