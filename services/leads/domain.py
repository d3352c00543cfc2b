"""Lead rules with no I/O: who owns a new lead, which status changes are legal, what may be written."""
from __future__ import annotations

import datetime as dt

from crmkit.auth import Principal
from crmkit.errors import Conflict, Forbidden

from .scoring import MONEY_FIELDS

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


def may_change(principal: Principal, owner_id: str | None, team_id: str | None) -> bool:
    """Whether someone may change a lead (what dedupe may write into it): its owner, a manager of
    its team (or of the shared queue), an executive or an admin. Marketing sees leads, changes none."""
    if principal.role in ("executive", "admin"):
        return True
    if principal.role == "manager":
        return owner_id == principal.user_id or team_id in principal.manages or (owner_id is None and team_id is None)
    return principal.role == "rep" and owner_id == principal.user_id


def check_may_modify(principal: Principal) -> None:
    if principal.role not in WORKING_ROLES:
        raise Forbidden(f"role {principal.role!r} may read leads but not change them")


# Leads these roles bring in (by hand or by import) are routed by the assignment rules; a rep's or
# manager's own leads stay theirs (CONTRACT §2: "theirs ... unless assignment rules ... say otherwise").
ROUTED_ROLES = ("marketing", "admin")
# Who may hand a lead to someone else (CONTRACT §2: reassign is a manager's action).
REASSIGNING_ROLES = ("manager", "executive", "admin")


def initial_ownership(principal: Principal) -> tuple[str | None, str | None]:
    """A lead belongs to its creator and their first team; marketing's and admin's go to the rules."""
    if principal.role in ROUTED_ROLES:
        return None, None
    return principal.user_id, principal.primary_team


def check_money_rules_kept(current: list[dict], proposed: list[dict]) -> None:
    """A role that may not read money fields may change every scoring rule but those on money
    fields: those it must leave exactly as they are (it may not add, change or remove one)."""
    def money(rules: list[dict]) -> list[dict]:
        return sorted((r for r in rules if r["field"] in MONEY_FIELDS), key=lambda r: r["name"])

    if money(current) != money(proposed):
        raise Forbidden("rules on money fields (estimated_value, quoted_price) are for roles that may read them; "
                        "keep them as they are")


def check_may_reassign(principal: Principal) -> None:
    if principal.role not in REASSIGNING_ROLES:
        raise Forbidden("only managers, executives and admins reassign leads")


def check_convertible(status: str) -> None:
    if status == "converted":
        raise Conflict("this lead was converted already")
    if status == "disqualified":
        raise Conflict("a disqualified lead cannot be converted; re-open it first")


def status_after_activity(status: str, kind: str) -> str:
    """Any real contact (not a note) moves a new lead to contacted."""
    return "contacted" if status == "new" and kind != "note" else status


def next_follow_up(status: str, next_contact_at, now: dt.datetime, sla: dt.timedelta = DEFAULT_FOLLOW_UP_SLA):
    """After an activity: the agreed next contact, or a fresh SLA window; closed leads have none."""
    if status not in OPEN_STATUSES:
        return None
    return next_contact_at or now + sla


def follow_up_due(owner_id: str | None, now: dt.datetime, sla: dt.timedelta = DEFAULT_FOLLOW_UP_SLA):
    return now + sla if owner_id else None


def funnel_stages(counts_by_status: dict[str, int]) -> dict[str, int]:
    """How far leads got, from their current status: a converted lead was qualified and contacted."""
    c = {status: counts_by_status.get(status, 0) for status in STATUSES}
    return {"contacted": c["contacted"] + c["qualified"] + c["converted"],
            "qualified": c["qualified"] + c["converted"], "converted": c["converted"],
            "disqualified": c["disqualified"]}
