"""Every way a lead comes in (the API, the marketing topic, CSV imports): normalize, dedupe (merge into
the lead the caller may change, or record a claim on one they may not), score, route. Each use case
leaves the commit to its caller: the API commits one request, the consumer a whole batch with its
processed ids, the import runner one chunk of rows with its progress."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from marshmallow import ValidationError
from sqlalchemy import or_, select

from crmkit.auth import Principal
from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, lock_keys, utcnow
from crmkit.errors import NotFound
from crmkit.pagination import SortSpec, paginate
from crmkit.settings import Settings

from . import domain
from .batch import batch
from .db import (
    ClaimRepository,
    DuplicateClaim,
    Lead,
)
from .dedupe import DEDUPE_KEYS, keys_for, refresh_keys
from .events import leads_event
from .lifecycle import follow_up_sla, publish, visible_lead
from .people import manager_of, successor_now, team_of
from .routing import route
from .rules import rescore
from .schemas import MarketingLeadSubmittedSchema

_marketing_schema = MarketingLeadSubmittedSchema()


def _new_lead(**fields) -> Lead:
    # A new row's version is always 1 (version_id_col); setting it here lets the lead.created
    # event be built without a flush, so a batch of creates is one multi-row INSERT.
    return Lead(id=uuid.uuid4(), version=1, status="new", score=0, score_reasons=[], touches=1, activities=0,
                **fields)


@dataclass
class Intake:
    lead: Lead
    merged: bool
    # Set when the prospect is a lead the caller may not change: nothing was written into it.
    claim: DuplicateClaim | None = None


def _pending(uow: UnitOfWork) -> dict[str, Lead]:
    """Dedupe keys of the leads this transaction created or merged, so a batch (a consumer poll,
    an import chunk) finds its own new leads without flushing before every lookup."""
    return batch(uow).by_key


def _created_here(uow: UnitOfWork) -> set[uuid.UUID]:
    """Ids of the leads this transaction created (flushed or not)."""
    return batch(uow).created


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
    batch(uow).prefetched.update(f"{c}:{v}" for c, vals in values.items() for v in vals)


def _find_duplicate(uow: UnitOfWork, keys: dict) -> Lead | None:
    keys = {column: value for column, value in keys.items() if column in DEDUPE_KEYS}
    wanted = {f"{column}:{value}" for column, value in keys.items() if value}
    if not wanted:
        return None
    index = _pending(uow)
    found = [index[k] for k in wanted if k in index]
    if found:
        return min(found, key=lambda lead: (lead.created_at, str(lead.id)))
    if wanted <= batch(uow).prefetched:
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
    refresh_keys(existing)
    rescore(uow, existing)
    _index(uow, existing)
    if existing in uow.session.new:  # merged into a lead this batch created: still version 1
        publish(uow, settings, "lead.merged", existing, actor, extra={"filled": filled, "via": via})
        return existing
    uow.session.flush()  # the UPDATE bumps the version the event carries
    publish(uow, settings, "lead.merged", existing, actor, extra={"filled": filled, "via": via})
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
        owner_id, team_id = successor, team_of(uow, successor)
    lead = _new_lead(currency=settings.default_currency, source="other", owner_id=owner_id, team_id=team_id,
                     created_by=created_by, created_at=now, updated_at=now, **keys)
    for name, value in fields.items():
        setattr(lead, name, value)
    rescore(uow, lead)
    rule = route(uow, lead) if owner_id is None else None
    if lead.follow_up_due_at is None:
        lead.follow_up_due_at = domain.follow_up_due(lead.owner_id, now, follow_up_sla())
    uow.session.add(lead)
    _index(uow, lead)
    _created_here(uow).add(lead.id)
    publish(uow, settings, "lead.created", lead, actor)
    if rule is not None:
        publish(uow, settings, "lead.assigned", lead, actor, extra={"previous_owner_id": None, "reason": "rule"})
    return Intake(lead, merged=False)


def _claim(uow: UnitOfWork, settings: Settings, existing: Lead, fields: dict, principal: Principal,
           via: str) -> DuplicateClaim:
    """Record that someone who may not change the lead brought its prospect again, for the lead's
    owner and their manager (the collision rule: they learn of each other; nothing is merged)."""
    claims = uow.repository(ClaimRepository)
    claim = claims.by(existing.id, principal.user_id)
    if claim is not None:  # the same person again: one claim, brought up to date, announced once
        claim.brought, claim.via, claim.created_at = {**claim.brought, **_plain(fields)}, via, utcnow()
        return claim
    claim = DuplicateClaim(id=uuid.uuid4(), lead_id=existing.id, claimed_by=principal.user_id,
                           claimed_role=principal.role, via=via, brought=_plain(fields), created_at=utcnow())
    claims.add(claim)
    uow.publish(*leads_event(settings, "lead.duplicate_claimed", existing.id, {
        "lead_id": existing.id, "claim_id": claim.id, "owner_id": existing.owner_id,
        "team_id": existing.team_id, "manager_id": manager_of(uow, existing), "claimed_by": principal.user_id,
        "via": via}, actor=principal.user_id))
    return claim


def _plain(fields: dict) -> dict:
    """Fields as JSON keeps them: money as decimal strings, times as ISO 8601."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else str(v) if isinstance(v, Decimal) else v)
            for k, v in fields.items() if v not in (None, "")}


def list_claims(uow: UnitOfWork, principal: Principal, lead_id: uuid.UUID, args: dict):
    """The duplicate claims on a lead, for whoever may change it (its owner, their managers)."""
    lead = visible_lead(uow, principal, lead_id)
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
