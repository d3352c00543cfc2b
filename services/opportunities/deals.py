"""Opportunities: open, read, list, edit, delete, their virtual team, and the collisions other reps'
deals have with them (found by detection.py). Each use case leaves the commit to its caller."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import delete, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import NotFound
from crmkit.pagination import parse_sort
from crmkit.settings import Settings

from . import day_facts, detection, domain, people
from .accounts import visible_account
from .db import (
    OPPORTUNITY_SORTABLE,
    Account,
    Collision,
    MemberRepository,
    Opportunity,
    OpportunityMember,
    OpportunityRepository,
    open_deal_ids,
)
from .events import event
from .stages import stages

# Changes of an opportunity that can make it look like (or unlike) another rep's deal.
_COLLISION_FIELDS = frozenset({"amount", "expected_close_date", "region", "products"})


def _stored_products(products: list[dict] | None) -> list[dict]:
    """Quoted products as the JSON column keeps them: prices as decimal strings, never floats."""
    return [{"sku": p["sku"], "qty": p["qty"], "unit_price": str(p["unit_price"])} for p in products or []]


def render_opportunities(uow: UnitOfWork, opportunities: list[Opportunity]) -> list[Opportunity]:
    ids = [o.id for o in opportunities]
    teams = uow.repository(MemberRepository).teams(ids)
    clashes: dict = {i: [] for i in ids}
    if ids:
        for c in uow.session.execute(select(Collision.opportunity_id, Collision.other_id).where(
                Collision.opportunity_id.in_(ids), Collision.other_id.in_(open_deal_ids()))
                .order_by(Collision.other_id)):  # not by score: the order would rank hidden deals
            clashes[c.opportunity_id].append(c.other_id)
    pipeline = stages(uow)
    for o in opportunities:
        o.team, o.collisions = teams[o.id], clashes[o.id]
        o.checklist = domain.checklist_view(pipeline, o.stage, o.checklist_done or {})
    return opportunities


def opportunity_event(uow, settings, kind: str, opp: Opportunity, actor, extra: dict | None = None) -> None:
    # The event carries the deal as stored and its virtual team (who is on it decides who else sees
    # it); not the API's rendering, whose collisions and checklist cost queries on every write.
    opp.team = uow.repository(MemberRepository).team(opp.id)
    day_facts.track(uow, kind, opp, extra or {})  # stage moves and pipeline changes, for the reports of the day
    uow.publish(*event(settings, kind, opp.id, {"opportunity": opp, **(extra or {})},
                       actor=actor))


def visible_opportunity(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID, *, for_update=False) -> Opportunity:
    opp = uow.repository(OpportunityRepository, principal).get(opp_id, for_update=for_update)
    if opp is None:
        raise NotFound(f"opportunity {opp_id} not found")
    return opp


def writable_opportunity(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID) -> Opportunity:
    opp = visible_opportunity(uow, principal, opp_id, for_update=True)
    domain.check_may_write(principal, opp.owner_id, opp.team_id)
    return opp


def get_opportunity(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID) -> Opportunity:
    return render_opportunities(uow, [visible_opportunity(uow, principal, opp_id)])[0]


def list_opportunities(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), OPPORTUNITY_SORTABLE, "-created_at")
    items, cursor = uow.repository(OpportunityRepository, principal).list(
        args, sort=sort, limit=args.pop("limit"), cursor=args.pop("cursor", None))
    return render_opportunities(uow, items), cursor


def new_opportunity(uow, settings, account: Account, fields: dict, *, owner_id, team_id, created_by, actor,
                     opp_id=None, detect: bool = True) -> Opportunity:
    first = stages(uow)[0]
    now = utcnow()
    opp = Opportunity(id=opp_id or uuid.uuid4(), account_id=account.id, version=1, status="open",
                      stage=first["key"], probability=first["probability"], checklist_done={},
                      currency=fields.pop("currency", None) or settings.default_currency,
                      region=fields.pop("region", None) or account.region,
                      products=_stored_products(fields.pop("products", None)),
                      owner_id=owner_id, team_id=team_id, created_by=created_by, created_at=now, updated_at=now,
                      stage_entered_at=now, expense_total=Decimal("0"), **fields)
    uow.session.add(opp)
    opportunity_event(uow, settings, "opportunity.created", opp, actor)
    if detect:
        detection.detect(uow, settings, opp, account.name, actor)
    return opp


def create_opportunity(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict, *,
                       detect: bool = True) -> Opportunity:
    account = visible_account(uow, principal, fields.pop("account_id"))
    # Seeing an account is not owning its business: a virtual-team member (or someone who sees it
    # only through one deal) creating a deal of their own on it would keep sight of the customer
    # after being taken off the team. Only whoever may change the account opens deals on it.
    domain.check_may_write(principal, account.owner_id, account.team_id)
    owner_id, team_id = people.ownership(uow, principal, fields.pop("owner_id", None))
    return new_opportunity(uow, settings, account, fields, owner_id=owner_id, team_id=team_id,
                            created_by=principal.user_id, actor=principal.user_id, detect=detect)


def _account_name(uow: UnitOfWork, account_id: uuid.UUID) -> str:
    return uow.session.execute(select(Account.name).where(Account.id == account_id)).scalar_one()


def update_opportunity(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, changes: dict,
                       check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    if "products" in changes:
        changes["products"] = _stored_products(changes["products"])
    changed = {k: v for k, v in changes.items() if getattr(opp, k) != v}
    if not changed:
        return render_opportunities(uow, [opp])[0]
    domain.check_open(opp.status)
    for name, value in changed.items():
        setattr(opp, name, value)
    opp.updated_at = utcnow()
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": sorted(changed)})
    if _COLLISION_FIELDS & set(changed):
        detection.detect(uow, settings, opp, _account_name(uow, opp.account_id), principal.user_id)
    return opp


def delete_opportunity(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID) -> None:
    opp = writable_opportunity(uow, principal, opp_id)
    opp.deleted_at = opp.updated_at = utcnow()
    uow.session.flush()
    detection.forget(uow, opp.id)
    opportunity_event(uow, settings, "opportunity.deleted", opp, principal.user_id)


def set_opportunity_team(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID,
                         members: list[dict]) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    members = people.check_members(uow, members)
    uow.session.execute(delete(OpportunityMember).where(OpportunityMember.opportunity_id == opp.id))
    uow.session.add_all([OpportunityMember(opportunity_id=opp.id, **m) for m in members])
    opp.updated_at = utcnow()
    uow.session.flush()
    opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": ["team"]})
    return opp


def list_collisions(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID) -> list[dict]:
    """Each open deal it collides with. The other deal is usually another rep's: its owner and their
    manager are named (whom to ask: that is the point), and nothing else unless the caller may see
    it anyway. The score, signals and reasons are derived from both deals, so a caller who could
    read them for a hidden deal could recover its amount, date, products and customer from his own
    deal's values (CONTRACT §2: a hidden record contributes nothing the caller can observe)."""
    opp = visible_opportunity(uow, principal, opp_id)
    rows = uow.session.execute(
        select(Collision, Opportunity, Account.name).join(Opportunity, Opportunity.id == Collision.other_id)
        .join(Account, Account.id == Opportunity.account_id)
        .where(Collision.opportunity_id == opp.id, Opportunity.status == "open", Opportunity.deleted_at.is_(None))
        .order_by(Collision.other_id)).all()
    seen = uow.repository(OpportunityRepository, principal).visible_ids([r[1].id for r in rows])
    items = []
    for collision, other, account_name in rows:
        item = {"opportunity_id": other.id, "owner_id": other.owner_id,
                "manager_id": people.manager_of(uow, other.owner_id), "visible": other.id in seen}
        if other.id in seen:
            item.update(account_name=account_name, name=other.name, score=collision.score,
                        signals=collision.signals, reasons=collision.reasons, detected_at=collision.detected_at)
        items.append(item)
    # Visible ones first, by score; hidden ones after, in an order that says nothing about them.
    return sorted(items, key=lambda i: (not i["visible"], -(i.get("score") or 0)))


def dismiss_collision(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID,
                      other_id: uuid.UUID, reason: str | None) -> None:
    """Someone who may change both deals (a manager over both owners, an executive) decides they are
    not the same deal: the pair is cleared and not flagged again."""
    for deal_id in (opp_id, other_id):
        writable_opportunity(uow, principal, deal_id)
    if not detection.dismiss(uow, opp_id, other_id, principal.user_id, reason):
        raise NotFound("these two opportunities are not flagged as a collision")
    uow.publish(*event(settings, "opportunity.collision_dismissed", opp_id, {
        "opportunity_ids": sorted([str(opp_id), str(other_id)]), "dismissed_by": principal.user_id,
        "reason": reason}, actor=principal.user_id))
