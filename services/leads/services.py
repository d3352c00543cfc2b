"""Lead use cases. Each takes a unit of work and leaves the commit to its caller: the API commits
one request, the consumer commits a whole batch of events with their processed ids, the import
runner commits one chunk of rows with its progress."""
from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from decimal import Decimal

from marshmallow import ValidationError
from sqlalchemy import func, or_, select

from crmkit.auth import Principal
from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.directory import (
    holder_now,
    principal_from_replica,
)
from crmkit.errors import Forbidden, NotFound, ValidationFailed
from crmkit.pagination import SortSpec, paginate, parse_sort
from crmkit.settings import Settings

from . import assignment, domain, scoring
from .db import (
    MONEY_BLIND_ROLES,
    SORTABLE,
    AssignmentCursor,
    CompletedHandover,
    DirectoryTeam,
    DirectoryUser,
    DuplicateClaim,
    Lead,
    LeadActivity,
    LeadRepository,
    RuleDocument,
)
from .dedupe import DEDUPE_KEYS, keys_for
from .events import lead_event, leads_event
from .schemas import MarketingLeadSubmittedSchema

_marketing_schema = MarketingLeadSubmittedSchema()
SCORING, ASSIGNMENT = "scoring", "assignment"
DEFAULT_RULES = {SCORING: scoring.DEFAULT_RULES, ASSIGNMENT: []}
# Fields that, when they change, change what the dedupe keys or the score say.
_KEYED = ("company", "contact_name", "email", "phone")


def follow_up_sla() -> dt.timedelta:
    hours = os.environ.get("LEADS_FOLLOW_UP_SLA_HOURS")
    return dt.timedelta(hours=float(hours)) if hours else domain.DEFAULT_FOLLOW_UP_SLA


def _publish(uow: UnitOfWork, settings: Settings, event_type: str, lead: Lead, actor, extra=None) -> None:
    uow.publish(*lead_event(settings, event_type, lead, actor=actor, extra=extra))


def _new_lead(**fields) -> Lead:
    # A new row's version is always 1 (version_id_col); setting it here lets the lead.created
    # event be built without a flush, so a batch of creates is one multi-row INSERT.
    return Lead(id=uuid.uuid4(), version=1, status="new", score=0, score_reasons=[], touches=1, activities=0,
                **fields)


# ---- rules -------------------------------------------------------------------------------------
# Reads of rules and of the directory replica never flush: a flush in the middle of a change would
# write the lead twice and bump its version twice for one request.
def rules(uow: UnitOfWork, name: str) -> list[dict]:
    key = ("rules", name)
    if key not in uow.cache:
        with uow.session.no_autoflush:
            doc = uow.session.get(RuleDocument, name)
        uow.cache[key] = doc.body["rules"] if doc else DEFAULT_RULES[name]
    return uow.cache[key]


def get_rule_document(uow: UnitOfWork, name: str) -> dict:
    doc = uow.session.get(RuleDocument, name)
    return {"rules": doc.body["rules"] if doc else DEFAULT_RULES[name], "version": doc.version if doc else 0}


def put_rule_document(uow: UnitOfWork, settings: Settings, principal: Principal, name: str, body: dict,
                      check_version) -> dict:
    doc = uow.session.get(RuleDocument, name, with_for_update=True)
    check_version(doc.version if doc else 0)
    if name == SCORING and principal.role in MONEY_BLIND_ROLES:
        # A rule on a field one may not read is a question about it, answered by every score.
        current = doc.body["rules"] if doc else DEFAULT_RULES[SCORING]
        domain.check_money_rules_kept(current, body["rules"])
    if doc is None:
        doc = RuleDocument(name=name, body=body, version=1, updated_by=principal.user_id, updated_at=utcnow())
        uow.session.add(doc)
    else:
        doc.body, doc.updated_by, doc.updated_at = body, principal.user_id, utcnow()
    uow.session.flush()
    uow.publish(*leads_event(settings, f"{name}_rules.updated", f"rules:{name}",
                             {"rules": body["rules"], "version": doc.version}, actor=principal.user_id))
    return {"rules": body["rules"], "version": doc.version}


def _rescore(uow: UnitOfWork, lead: Lead) -> None:
    facts = {f: getattr(lead, f, None) for f in scoring.SCORABLE_FIELDS}
    lead.score, lead.score_reasons = scoring.score(facts, rules(uow, SCORING))
    lead.score_public = scoring.public_score(lead.score_reasons)


def _refresh_keys(lead: Lead) -> None:
    for column, value in keys_for({f: getattr(lead, f) for f in _KEYED}).items():
        setattr(lead, column, value)


# ---- directory replica ---------------------------------------------------------------------------
def _directory_user(uow: UnitOfWork, user_id: str) -> DirectoryUser | None:
    with uow.session.no_autoflush:
        return uow.session.get(DirectoryUser, user_id)


def replica_principal(uow: UnitOfWork, user_id: str) -> Principal | None:
    with uow.session.no_autoflush:
        return principal_from_replica(uow.session, DirectoryUser, DirectoryTeam, user_id)


def importer_active(uow: UnitOfWork, user_id: str) -> bool:
    """Whether someone whose queued work runs on (an import) is still active; one the replica does not
    know is taken as active (the gateway let them in)."""
    user = _directory_user(uow, user_id)
    return user is None or bool(user.active)


def _team_of(uow: UnitOfWork, user_id: str) -> str | None:
    user = _directory_user(uow, user_id)
    return user.team_id if user else None


def _active_reps(uow: UnitOfWork, team_id: str) -> list[str]:
    key = ("reps", team_id)
    if key not in uow.cache:
        with uow.session.no_autoflush:
            uow.cache[key] = list(uow.session.execute(select(DirectoryUser.id).where(
                DirectoryUser.team_id == team_id, DirectoryUser.role == "rep", DirectoryUser.active.is_(True))
            ).scalars())
    return uow.cache[key]


def _is_active(uow: UnitOfWork, user_id: str) -> bool:
    user = _directory_user(uow, user_id)
    return bool(user and user.active)


def _open_loads(uow: UnitOfWork, team_id: str) -> dict[str, int]:
    """Open leads per active rep of a team, read once per transaction and kept current in memory."""
    key = ("loads", team_id)
    if key not in uow.cache:
        reps = _active_reps(uow, team_id)
        loads = dict.fromkeys(reps, 0)
        if reps:
            uow.session.flush()
            rows = uow.session.execute(select(Lead.owner_id, func.count()).where(
                Lead.owner_id.in_(reps), Lead.status.in_(domain.OPEN_STATUSES), Lead.deleted_at.is_(None)
            ).group_by(Lead.owner_id)).all()
            loads.update(dict(rows))
        uow.cache[key] = loads
    return uow.cache[key]


# ---- assignment ----------------------------------------------------------------------------------
def _give(uow: UnitOfWork, lead: Lead, owner_id: str | None, team_id: str | None, rule: str | None) -> str | None:
    previous = lead.owner_id
    if previous and ("loads", lead.team_id) in uow.cache and previous in uow.cache[("loads", lead.team_id)]:
        uow.cache[("loads", lead.team_id)][previous] -= 1
    lead.owner_id, lead.team_id, lead.assigned_by_rule = owner_id, team_id, rule
    lead.assigned_at = utcnow()
    if owner_id and ("loads", team_id) in uow.cache and owner_id in uow.cache[("loads", team_id)]:
        uow.cache[("loads", team_id)][owner_id] += 1
    if owner_id and lead.status in domain.OPEN_STATUSES:
        lead.follow_up_due_at = lead.assigned_at + follow_up_sla()
    return previous


def _route(uow: UnitOfWork, lead: Lead) -> str | None:
    """Apply the assignment rules to an unowned lead; returns the rule that matched, if any."""
    facts = {"region": lead.region, "industry": lead.industry, "source": lead.source, "score": lead.score}
    candidates = {r["assign_to"]["user_id"] for r in rules(uow, ASSIGNMENT) if "user_id" in r["assign_to"]}
    active = {u for u in candidates if _is_active(uow, u)}
    target = assignment.pick_rule(rules(uow, ASSIGNMENT), facts, active)
    if target.rule is None:
        return None
    if target.user_id:
        _give(uow, lead, target.user_id, _team_of(uow, target.user_id), target.rule)
        return target.rule
    owner = _pick_in_team(uow, target.team_id, target.strategy)
    _give(uow, lead, owner, target.team_id, target.rule)  # no active rep: the team's own queue
    return target.rule


def _pick_in_team(uow: UnitOfWork, team_id: str, strategy: str) -> str | None:
    reps = _active_reps(uow, team_id)
    if not reps:
        return None
    if strategy == "least_loaded":
        return assignment.least_loaded(_open_loads(uow, team_id))
    key = ("cursor", team_id)
    if key not in uow.cache:
        # Locked once per transaction: a get() with FOR UPDATE goes to the database every time
        # (and flushes first), which made round robin cost half of a consumer batch.
        with uow.session.no_autoflush:
            cursor = uow.session.get(AssignmentCursor, team_id, with_for_update=True)
        if cursor is None:
            cursor = AssignmentCursor(team_id=team_id, last_user_id=None)
            uow.session.add(cursor)
        uow.cache[key] = cursor
    cursor = uow.cache[key]
    cursor.last_user_id = assignment.next_round_robin(reps, cursor.last_user_id)
    return cursor.last_user_id


def reassign(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, target: dict) -> Lead:
    lead = _visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_reassign(principal)
    if "user_id" in target:
        if not _is_active(uow, target["user_id"]):
            raise ValidationFailed("no active user with that id", errors={"user_id": ["unknown or inactive user"]})
        owner, team = target["user_id"], _team_of(uow, target["user_id"])
    else:
        owner, team = None, target["team_id"]
    if principal.role == "manager" and team not in principal.manages:
        raise Forbidden("managers hand leads only to their own teams")
    previous = _give(uow, lead, owner, team, None)
    lead.updated_at = utcnow()
    uow.session.flush()
    _publish(uow, settings, "lead.assigned", lead, principal.user_id,
             extra={"previous_owner_id": previous, "reason": "reassigned"})
    return lead


# ---- intake: every way a lead comes in -----------------------------------------------------------
@dataclass
class Intake:
    lead: Lead
    merged: bool
    # Set when the prospect is a lead the caller may not change: nothing was written into it.
    claim: DuplicateClaim | None = None


def _pending(uow: UnitOfWork) -> dict[str, Lead]:
    """Dedupe keys of the leads this transaction created or merged, so a batch (a consumer poll,
    an import chunk) finds its own new leads without flushing before every lookup."""
    return uow.cache.setdefault("intake_index", {})


def _created_here(uow: UnitOfWork) -> set[uuid.UUID]:
    """Ids of the leads this transaction created (flushed or not)."""
    return uow.cache.setdefault("created_here", set())


def _index(uow: UnitOfWork, lead: Lead) -> None:
    index = _pending(uow)
    for column in DEDUPE_KEYS:
        value = getattr(lead, column)
        if value:
            index.setdefault(f"{column}:{value}", lead)


def _existing_with_keys(uow: UnitOfWork, values: dict[str, set[str]]) -> list[Lead]:
    conditions = [getattr(Lead, column).in_(sorted(vals)) for column, vals in values.items() if vals]
    if not conditions:
        return []
    # The oldest lead first, so a merge always keeps the older id. A converted lead is a customer
    # now: someone coming back through the funnel is new business and gets a lead of its own.
    return list(uow.session.execute(select(Lead).where(Lead.deleted_at.is_(None), Lead.status != "converted",
                                                       or_(*conditions))
                                    .order_by(Lead.created_at, Lead.id).with_for_update()).scalars())


def prefetch_duplicates(uow: UnitOfWork, candidates: list[dict]) -> None:
    """Before a batch (an import chunk, a consumer poll): lock every key it carries and load every
    existing lead that shares one, in two statements instead of two per lead."""
    values: dict[str, set[str]] = {column: set() for column in DEDUPE_KEYS}
    for fields in candidates:
        for column, value in keys_for(fields).items():
            if value and column in values:
                values[column].add(value)
    all_values = [v for vals in values.values() for v in vals]
    # No flush first: a flush here would write the batch's leads one statement at a time.
    with uow.session.no_autoflush:
        lock_keys(uow, all_values)
        for lead in _existing_with_keys(uow, values):
            _index(uow, lead)
    uow.cache.setdefault("prefetched", set()).update(f"{c}:{v}" for c, vals in values.items() for v in vals)


def _find_duplicate(uow: UnitOfWork, keys: dict) -> Lead | None:
    keys = {column: value for column, value in keys.items() if column in DEDUPE_KEYS}
    wanted = {f"{column}:{value}" for column, value in keys.items() if value}
    if not wanted:
        return None
    index = _pending(uow)
    found = [index[k] for k in wanted if k in index]
    if found:
        return min(found, key=lambda lead: (lead.created_at, str(lead.id)))
    if wanted <= uow.cache.get("prefetched", set()):
        return None  # prefetch_duplicates already looked these keys up, and locked them
    values = {column: {value} for column, value in keys.items() if value}
    with uow.session.no_autoflush:  # this transaction's own leads are in the index
        lock_keys(uow, [v for vals in values.values() for v in vals])
        existing = _existing_with_keys(uow, values)
    return existing[0] if existing else None


def _merge(uow: UnitOfWork, settings: Settings, existing: Lead, fields: dict, actor, via: str, *,
           may_reopen: bool) -> Lead:
    """A duplicate adds a touch and fills what the existing lead lacks; it overwrites nothing.
    A disqualified lead whose prospect comes back is re-opened when the one who brought it may
    decide that (its owner or a leader): interest returned, and no lead may sit unseen in a closed
    pile. A prospect coming back through the marketing topic adds its touch and leaves the status."""
    filled = sorted(name for name, value in fields.items()
                    if value not in (None, "") and getattr(existing, name, None) in (None, "")
                    and name != "follow_up_due_at")
    for name in filled:
        setattr(existing, name, fields[name])
    if existing.status == "disqualified" and may_reopen:
        existing.status = "new"
        filled.append("status")
    if existing.status in domain.OPEN_STATUSES and existing.owner_id and existing.follow_up_due_at is None:
        existing.follow_up_due_at = utcnow() + follow_up_sla()
    existing.touches += 1
    existing.updated_at = utcnow()
    _refresh_keys(existing)
    _rescore(uow, existing)
    _index(uow, existing)
    if existing in uow.session.new:  # merged into a lead this batch created: still version 1
        _publish(uow, settings, "lead.merged", existing, actor, extra={"filled": filled, "via": via})
        return existing
    uow.session.flush()  # the UPDATE bumps the version the event carries
    _publish(uow, settings, "lead.merged", existing, actor, extra={"filled": filled, "via": via})
    return existing


def intake(uow: UnitOfWork, settings: Settings, fields: dict, *, owner_id: str | None, team_id: str | None,
           created_by: str, actor, via: str, principal: Principal | None = None) -> Intake:
    """Dedupe, score and route one incoming lead (from the API, the marketing topic or an import).
    `principal` is the person bringing it (None for the marketing topic, a trusted system): a
    duplicate of a lead they may not change is a claim on it, never a merge into it."""
    keys = keys_for(fields)
    existing = _find_duplicate(uow, keys)
    if existing is not None:
        # A lead this same batch created (two rows of one file) is the bringer's own doing: merged.
        if principal is not None and existing.id not in _created_here(uow) and not domain.may_change(
                principal, existing.owner_id, existing.team_id):
            return Intake(existing, merged=False, claim=_claim(uow, settings, existing, fields, principal, via))
        return Intake(_merge(uow, settings, existing, fields, actor, via, may_reopen=principal is not None),
                      merged=True)
    now = utcnow()
    if owner_id is not None and (successor := successor_now(uow, owner_id)) != owner_id:
        # Brought by (or for) someone whose records were handed over: the successor's, like the rest.
        owner_id, team_id = successor, _team_of(uow, successor)
    lead = _new_lead(currency=settings.default_currency, source="other", owner_id=owner_id, team_id=team_id,
                     created_by=created_by, created_at=now, updated_at=now, **keys)
    for name, value in fields.items():
        setattr(lead, name, value)
    _rescore(uow, lead)
    rule = _route(uow, lead) if owner_id is None else None
    if lead.follow_up_due_at is None:
        lead.follow_up_due_at = domain.follow_up_due(lead.owner_id, now, follow_up_sla())
    uow.session.add(lead)
    _index(uow, lead)
    _created_here(uow).add(lead.id)
    _publish(uow, settings, "lead.created", lead, actor)
    if rule is not None:
        _publish(uow, settings, "lead.assigned", lead, actor, extra={"previous_owner_id": None, "reason": "rule"})
    return Intake(lead, merged=False)


def _claim(uow: UnitOfWork, settings: Settings, existing: Lead, fields: dict, principal: Principal,
           via: str) -> DuplicateClaim:
    """Record that someone who may not change the lead brought its prospect again, for the lead's
    owner and their manager (the collision rule: they learn of each other; nothing is merged)."""
    with uow.session.no_autoflush:
        claim = uow.session.execute(select(DuplicateClaim).where(
            DuplicateClaim.lead_id == existing.id, DuplicateClaim.claimed_by == principal.user_id)).scalar_one_or_none()
    if claim is not None:  # the same person again: one claim, brought up to date, announced once
        claim.brought, claim.via, claim.created_at = {**claim.brought, **_plain(fields)}, via, utcnow()
        return claim
    claim = DuplicateClaim(id=uuid.uuid4(), lead_id=existing.id, claimed_by=principal.user_id,
                           claimed_role=principal.role, via=via, brought=_plain(fields), created_at=utcnow())
    uow.session.add(claim)
    uow.publish(*leads_event(settings, "lead.duplicate_claimed", existing.id, {
        "lead_id": existing.id, "claim_id": claim.id, "owner_id": existing.owner_id,
        "team_id": existing.team_id, "manager_id": manager_of(uow, existing), "claimed_by": principal.user_id,
        "via": via}, actor=principal.user_id))
    return claim


def _plain(fields: dict) -> dict:
    """Fields as JSON keeps them: money as decimal strings, times as ISO 8601."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else str(v) if isinstance(v, Decimal) else v)
            for k, v in fields.items() if v not in (None, "")}


def manager_of(uow: UnitOfWork, lead: Lead) -> str | None:
    """Whom to ask about a lead: the manager of its team (or of its owner's team)."""
    team_id = lead.team_id or (_team_of(uow, lead.owner_id) if lead.owner_id else None)
    if not team_id:
        return None
    with uow.session.no_autoflush:
        team = uow.session.get(DirectoryTeam, team_id)
    return team.manager_id if team else None


def list_claims(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, args: dict):
    """The duplicate claims on a lead, for whoever may change it (its owner, their managers)."""
    lead = _visible_lead(uow, principal, lead_id)
    if not domain.may_change(principal, lead.owner_id, lead.team_id):
        raise NotFound(f"lead {lead_id} not found")
    return paginate(uow.session, select(DuplicateClaim).where(DuplicateClaim.lead_id == lead.id),
                    model=DuplicateClaim, sort=SortSpec("created_at", descending=True), limit=args["limit"],
                    cursor=args.get("cursor"))


def create_lead(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Intake:
    owner_id, team_id = domain.initial_ownership(principal)
    return intake(uow, settings, fields, owner_id=owner_id, team_id=team_id, created_by=principal.user_id,
                  actor=principal.user_id, via="api", principal=principal)


def prepare_marketing_batch(uow: UnitOfWork, envelopes: list[dict]) -> None:
    """Batch hook of the marketing consumer: dedupe lookups for the whole poll at once."""
    candidates = []
    for envelope in envelopes:
        try:
            candidates.append(_marketing_schema.load(envelope["data"]))
        except (ValidationError, TypeError):
            continue  # its own handler call rejects it with the reason
    prefetch_duplicates(uow, candidates)


def ingest_marketing_lead(uow: UnitOfWork, settings: Settings, envelope: dict) -> Intake:
    """Handler of marketing.lead.submitted version 1: validate, dedupe, score, route."""
    try:
        data = _marketing_schema.load(envelope["data"])
    except ValidationError as exc:
        raise Reject(f"invalid marketing lead: {exc.messages}") from None
    data.pop("occurred_at", None)
    return intake(uow, settings, data, owner_id=None, team_id=None, created_by=f"marketing:{envelope['source']}",
                  actor=envelope.get("actor") or envelope["source"], via="marketing")


# ---- reading and changing one lead ---------------------------------------------------------------
def _visible_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, *, for_update: bool = False) -> Lead:
    lead = LeadRepository(uow.session, principal).get(lead_id, for_update=for_update)
    if lead is None:
        raise NotFound(f"lead {lead_id} not found")
    return lead


def get_lead(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID) -> Lead:
    return _visible_lead(uow, principal, lead_id)


def list_leads(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), SORTABLE, "-created_at")
    if sort.field == "score" and principal.role in MONEY_BLIND_ROLES:
        sort = SortSpec("score_public", sort.descending)
    limit, cursor = args.pop("limit"), args.pop("cursor", None)
    return LeadRepository(uow.session, principal).list(args, sort=sort, limit=limit, cursor=cursor)


def update_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, changes: dict,
                check_version) -> Lead:
    """`check_version(current_version)` raises 412/428 unless the caller saw this version."""
    lead = _visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    check_version(lead.version)
    if "status" in changes:
        domain.check_status_change(lead.status, changes["status"])
    changed = {name: value for name, value in changes.items() if getattr(lead, name) != value}
    if not changed:
        return lead
    for name, value in changed.items():
        setattr(lead, name, value)
    if not (lead.company or lead.contact_name):
        raise ValidationFailed("a lead needs a company or a contact name",
                               errors={"company": ["company and contact_name cannot both be empty"]})
    if set(changed) & set(_KEYED):
        _refresh_keys(lead)
    _rescore(uow, lead)
    if changed.get("status") == "disqualified":
        lead.follow_up_due_at = None
    elif lead.status in domain.OPEN_STATUSES and lead.owner_id and lead.follow_up_due_at is None:
        lead.follow_up_due_at = utcnow() + follow_up_sla()  # re-opened: due again
    lead.updated_at = utcnow()
    uow.session.flush()  # the UPDATE bumps the version the event carries
    _publish(uow, settings, "lead.updated", lead, principal.user_id, extra={"changed": sorted(changed)})
    if changed.get("status") == "disqualified":
        _publish(uow, settings, "lead.disqualified", lead, principal.user_id)
    return lead


def delete_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID) -> None:
    """Soft delete: the row stays for audit and undo, and disappears from every read."""
    lead = _visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    lead.deleted_at = lead.updated_at = utcnow()
    uow.session.flush()
    _publish(uow, settings, "lead.deleted", lead, principal.user_id)


# ---- activities and follow-up --------------------------------------------------------------------
def lead_funnel(uow: UnitOfWork, principal: Principal, period) -> dict:
    counts = LeadRepository(uow.session, principal).count_by_status(period.start, period.end)
    return {"period": period.label, "start": period.start, "end": period.end, "leads": sum(counts.values()),
            **domain.funnel_stages(counts)}


def log_activity(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID,
                 data: dict) -> LeadActivity:
    lead = _visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    now = utcnow()
    before = {f: getattr(lead, f) for f in ("status", "follow_up_due_at", "score", "last_activity_at")}
    activity = LeadActivity(id=uuid.uuid4(), lead_id=lead.id, kind=data["kind"], summary=data.get("summary"),
                            occurred_at=data.get("occurred_at") or now, next_contact_at=data.get("next_contact_at"),
                            created_by=principal.user_id, created_at=now)
    uow.session.add(activity)
    lead.activities += 1
    lead.last_activity_at = max(filter(None, [lead.last_activity_at, activity.occurred_at]))
    lead.status = domain.status_after_activity(lead.status, activity.kind)
    lead.follow_up_due_at = domain.next_follow_up(lead.status, activity.next_contact_at, now, follow_up_sla())
    _rescore(uow, lead)
    lead.updated_at = now
    uow.session.flush()
    uow.publish(*leads_event(settings, "activity.logged", lead.id, {
        "lead_id": lead.id, "activity_id": activity.id, "kind": activity.kind, "summary": activity.summary,
        "occurred_at": activity.occurred_at, "next_contact_at": activity.next_contact_at,
        "follow_up_due_at": lead.follow_up_due_at, "owner_id": lead.owner_id, "team_id": lead.team_id,
        "company": lead.company}, actor=principal.user_id))
    changed = ["activities", *sorted(f for f, value in before.items() if getattr(lead, f) != value)]
    _publish(uow, settings, "lead.updated", lead, principal.user_id, extra={"changed": changed})
    return activity


def list_activities(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, args: dict):
    """A lead's activities, newest first, one cursor page at a time."""
    lead = _visible_lead(uow, principal, lead_id)
    return paginate(uow.session, select(LeadActivity).where(LeadActivity.lead_id == lead.id), model=LeadActivity,
                    sort=SortSpec("occurred_at", descending=True), limit=args["limit"], cursor=args.get("cursor"))


def successor_now(uow: UnitOfWork, user_id: str | None) -> str | None:
    """Whoever holds the user's records now (crmkit.directory.holder_now, on this service's tables)."""
    return holder_now(uow, CompletedHandover, DirectoryUser, user_id)
