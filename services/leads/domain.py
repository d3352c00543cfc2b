"""Lead rules with no I/O: who owns a new lead, which status changes are legal, what may be written."""
from __future__ import annotations

import datetime as dt

from crmkit.auth import Principal
from crmkit.errors import Conflict, Forbidden

STATUSES = ("new", "contacted", "qualified", "converted", "disqualified")
SOURCES = ("web", "phone", "referral", "event", "marketing", "import", "other")
OPEN_STATUSES = ("new", "contacted", "qualified")

# Status changes a PATCH may make. `converted` is reached only through /convert, which also
# creates the account, contact and opportunity; a disqualified lead can be re-opened.
_ALLOWED = {
    "new": {"contacted", "qualified", "disqualified"},
    "contacted": {"new", "qualified", "disqualified"},
    "qualified": {"contacted", "disqualified"},
    "disqualified": {"new", "contacted"},
    "converted": set(),
}

DEFAULT_FOLLOW_UP_SLA = dt.timedelta(hours=24)

# Roles that may change a lead they can see. Marketing sees every lead but works none;
# `service` staff have no business with leads at all.
WORKING_ROLES = ("rep", "manager", "executive", "admin")


def check_status_change(current: str, new: str) -> None:
    if new == current:
        return
    if new == "converted":
        raise Conflict("a lead becomes converted only through POST /leads/{id}/convert")
    if new not in _ALLOWED[current]:
        raise Conflict(f"a {current} lead cannot become {new}")


def check_may_modify(principal: Principal) -> None:
    if principal.role not in WORKING_ROLES:
        raise Forbidden(f"role {principal.role!r} may read leads but not change them")


def initial_ownership(principal: Principal) -> tuple[str | None, str | None]:
    """A lead belongs to its creator and their first team; marketing's go to the unassigned queue."""
    if principal.role == "marketing":
        return None, None
    return principal.user_id, principal.primary_team


def follow_up_due(owner_id: str | None, now: dt.datetime, sla: dt.timedelta = DEFAULT_FOLLOW_UP_SLA):
    return now + sla if owner_id else None
