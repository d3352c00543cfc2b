"""Use cases of accounts, contacts and opportunities. Each takes a unit of work and leaves the
commit to its caller (the API commits one request, a consumer one batch of events)."""
from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import delete, func, select, update

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, Forbidden, NotFound, ValidationFailed
from crmkit.fields import MONEY_MAX
from crmkit.pagination import SortSpec, paginate, parse_sort
from crmkit.settings import Settings

from . import detection, domain, people
from .db import (
    ACCOUNT_SORTABLE,
    OPPORTUNITY_SORTABLE,
    Account,
    AccountMember,
    AccountRepository,
    Activity,
    Collision,
    Contact,
    Expense,
    Opportunity,
    OpportunityMember,
    OpportunityRepository,
    PipelineDocument,
    account_visible,
    opportunity_visible,
)
from .events import event

PIPELINE = "pipeline"
# Changes of an opportunity that can make it look like (or unlike) another rep's deal.
_COLLISION_FIELDS = frozenset({"amount", "expected_close_date", "region", "products"})


def _stored_products(products: list[dict] | None) -> list[dict]:
    """Quoted products as the JSON column keeps them: prices as decimal strings, never floats."""
    return [{"sku": p["sku"], "qty": p["qty"], "unit_price": str(p["unit_price"])} for p in products or []]


# ---- the pipeline's stages ----------------------------------------------------------------------------
def stages(uow: UnitOfWork) -> list[dict]:
    if "stages" not in uow.cache:
        with uow.session.no_autoflush:
            doc = uow.session.get(PipelineDocument, PIPELINE)
        uow.cache["stages"] = doc.body["stages"] if doc else domain.DEFAULT_STAGES
    return uow.cache["stages"]


def get_stages(uow: UnitOfWork) -> dict:
    doc = uow.session.get(PipelineDocument, PIPELINE)
    return {"stages": doc.body["stages"] if doc else domain.DEFAULT_STAGES, "version": doc.version if doc else 0}


def put_stages(uow: UnitOfWork, settings: Settings, principal: Principal, body: dict, check_version) -> dict:
    domain.validate_stages(body["stages"])
    doc = uow.session.get(PipelineDocument, PIPELINE, with_for_update=True)
    check_version(doc.version if doc else 0)
    kept = {s["key"] for s in body["stages"]}
    stranded = uow.session.execute(select(Opportunity.stage, func.count()).where(
        Opportunity.status == "open", Opportunity.deleted_at.is_(None), Opportunity.stage.not_in(kept))
        .group_by(Opportunity.stage)).all()
    if stranded:
        raise Conflict("open opportunities are in stages this document removes; move them first",
                       errors={"stages": [f"{stage}: {n} open" for stage, n in stranded]})
    if doc is None:
        doc = PipelineDocument(name=PIPELINE, body=body, version=1, updated_by=principal.user_id, updated_at=utcnow())
        uow.session.add(doc)
    else:
        doc.body, doc.updated_by, doc.updated_at = body, principal.user_id, utcnow()
    uow.session.flush()
    uow.publish(*event(settings, "pipeline.updated", PIPELINE, {"stages": body["stages"], "version": doc.version},
                       actor=principal.user_id))
    return {"stages": body["stages"], "version": doc.version}


# ---- the directory replica -------------------------------------------------------------------------
def _ownership(uow: UnitOfWork, principal: Principal, requested_owner: str | None) -> tuple[str, str | None]:
    """Who owns a new record: the creator, unless a leader names someone (CONTRACT §2)."""
    if requested_owner is None or requested_owner == principal.user_id:
        successor = people.successor_now(uow, principal.user_id)
        if successor != principal.user_id:  # created in the gap after the creator's handover
            return successor, getattr(people.user(uow, successor), "team_id", None)
        return principal.user_id, principal.primary_team
    domain.check_may_set_owner(principal)
    user = people.user(uow, requested_owner)
    if user is None or not user.active or user.role not in ("rep", "manager"):
        raise ValidationFailed("no active rep or manager with that id", errors={"owner_id": ["unknown or inactive"]})
    if principal.role == "manager" and user.team_id not in principal.manages:
        raise Forbidden("managers give records only to people in their own teams")
    return user.id, user.team_id


def _check_members(uow: UnitOfWork, members: list[dict]) -> list[dict]:
    members = domain.unique_members(members)
    unknown = [m["user_id"] for m in members if (u := people.user(uow, m["user_id"])) is None or not u.active]
    if unknown:
        raise ValidationFailed("virtual team members must be active users",
                               errors={"members": [f"unknown or inactive: {u}" for u in unknown]})
    return members


# ---- rendering ---------------------------------------------------------------------------------------
def render_accounts(uow: UnitOfWork, accounts: list[Account]) -> list[Account]:
    ids = [a.id for a in accounts]
    teams: dict = {i: [] for i in ids}
    if ids:
        for m in uow.session.execute(select(AccountMember).where(AccountMember.account_id.in_(ids))
                                     .order_by(AccountMember.user_id)).scalars():
            teams[m.account_id].append({"user_id": m.user_id, "role": m.role})
    for a in accounts:
        a.team = teams[a.id]
    return accounts


def _open_deals():
    return select(Opportunity.id).where(Opportunity.status == "open", Opportunity.deleted_at.is_(None))


def render_opportunities(uow: UnitOfWork, opportunities: list[Opportunity]) -> list[Opportunity]:
    ids = [o.id for o in opportunities]
    teams: dict = {i: [] for i in ids}
    clashes: dict = {i: [] for i in ids}
    if ids:
        for m in uow.session.execute(select(OpportunityMember).where(OpportunityMember.opportunity_id.in_(ids))
                                     .order_by(OpportunityMember.user_id)).scalars():
            teams[m.opportunity_id].append({"user_id": m.user_id, "role": m.role})
        for c in uow.session.execute(select(Collision.opportunity_id, Collision.other_id).where(
                Collision.opportunity_id.in_(ids), Collision.other_id.in_(_open_deals()))
                .order_by(Collision.other_id)):  # not by score: the order would rank hidden deals
            clashes[c.opportunity_id].append(c.other_id)
    pipeline = stages(uow)
    for o in opportunities:
        o.team, o.collisions = teams[o.id], clashes[o.id]
        o.checklist = domain.checklist_view(pipeline, o.stage, o.checklist_done or {})
    return opportunities


def _account_event(uow, settings, kind: str, account: Account, actor, extra: dict | None = None) -> None:
    render_accounts(uow, [account])
    uow.publish(*event(settings, kind, account.id, {"account": account, **(extra or {})},
                       actor=actor))


def _opportunity_event(uow, settings, kind: str, opp: Opportunity, actor, extra: dict | None = None) -> None:
    # The event carries the deal as stored and its virtual team (who is on it decides who else sees
    # it); not the API's rendering, whose collisions and checklist cost queries on every write.
    opp.team = [{"user_id": m.user_id, "role": m.role} for m in uow.session.execute(
        select(OpportunityMember).where(OpportunityMember.opportunity_id == opp.id)
        .order_by(OpportunityMember.user_id)).scalars()]
    uow.publish(*event(settings, kind, opp.id, {"opportunity": opp, **(extra or {})},
                       actor=actor))


# ---- accounts ----------------------------------------------------------------------------------------
def visible_account(uow: UnitOfWork, principal: Principal, account_id: uuid.UUID, *, for_update=False) -> Account:
    account = AccountRepository(uow.session, principal).get(account_id, for_update=for_update)
    if account is None:
        raise NotFound(f"account {account_id} not found")
    return account


def writable_account(uow: UnitOfWork, principal: Principal, account_id: uuid.UUID) -> Account:
    account = visible_account(uow, principal, account_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    return account


def create_account(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Account:
    owner_id, team_id = _ownership(uow, principal, fields.pop("owner_id", None))
    now = utcnow()
    fields.setdefault("type", "b2b")
    account = Account(id=uuid.uuid4(), version=1, tier="unranked", owner_id=owner_id, team_id=team_id,
                      created_by=principal.user_id, created_at=now, updated_at=now, **fields)
    uow.session.add(account)
    _account_event(uow, settings, "account.created", account, principal.user_id)
    return account


def list_accounts(uow: UnitOfWork, principal: Principal, args: dict):
    sort = parse_sort(args.pop("sort", None), ACCOUNT_SORTABLE, "-created_at")
    items, cursor = AccountRepository(uow.session, principal).list(args, sort=sort, limit=args.pop("limit"),
                                                                   cursor=args.pop("cursor", None))
    return render_accounts(uow, items), cursor


def update_account(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID, changes: dict,
                   check_version) -> Account:
    account = writable_account(uow, principal, account_id)
    check_version(account.version)
    changed = {k: v for k, v in changes.items() if getattr(account, k) != v}
    if not changed:
        return render_accounts(uow, [account])[0]
    for name, value in changed.items():
        setattr(account, name, value)
    account.updated_at = utcnow()
    uow.session.flush()
    _account_event(uow, settings, "account.updated", account, principal.user_id, {"changed": sorted(changed)})
    if "name" in changed:  # a renamed customer may now look like (or unlike) another rep's
        detection.queue_recheck(uow, _open_deal_ids(uow, account.id), principal.user_id)
    return account


def _open_opportunities_of(uow: UnitOfWork, account_id: uuid.UUID) -> list[Opportunity]:
    return list(uow.session.execute(select(Opportunity).where(
        Opportunity.account_id == account_id, Opportunity.status == "open", Opportunity.deleted_at.is_(None))).scalars())


def _open_deal_ids(uow: UnitOfWork, account_id: uuid.UUID) -> list[uuid.UUID]:
    return list(uow.session.execute(_open_deals().where(Opportunity.account_id == account_id)).scalars())


def delete_account(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID) -> None:
    account = writable_account(uow, principal, account_id)
    if _open_opportunities_of(uow, account.id):
        raise Conflict("the account has open opportunities; win, lose or delete them first")
    account.deleted_at = account.updated_at = utcnow()
    uow.session.flush()
    _account_event(uow, settings, "account.deleted", account, principal.user_id)


def set_account_team(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID,
                     members: list[dict]) -> Account:
    account = writable_account(uow, principal, account_id)
    members = _check_members(uow, members)
    uow.session.execute(delete(AccountMember).where(AccountMember.account_id == account.id))
    uow.session.add_all([AccountMember(account_id=account.id, **m) for m in members])
    account.updated_at = utcnow()
    uow.session.flush()
    _account_event(uow, settings, "account.updated", account, principal.user_id, {"changed": ["team"]})
    return account


# ---- contacts ----------------------------------------------------------------------------------------
def _visible_contact(uow: UnitOfWork, principal: Principal, contact_id: uuid.UUID, *, for_update=False):
    contact = uow.session.get(Contact, contact_id, with_for_update=for_update)
    if contact is None or contact.deleted_at is not None:
        raise NotFound(f"contact {contact_id} not found")
    try:
        account = visible_account(uow, principal, contact.account_id)
    except NotFound:
        raise NotFound(f"contact {contact_id} not found") from None
    return contact, account


def _make_primary(uow: UnitOfWork, contact: Contact) -> None:
    uow.session.execute(update(Contact).where(Contact.account_id == contact.account_id, Contact.id != contact.id,
                                              Contact.is_primary.is_(True))
                        .values(is_primary=False, version=Contact.version + 1, updated_at=utcnow()))


def _has_primary(uow: UnitOfWork, account_id: uuid.UUID) -> bool:
    return uow.session.execute(select(Contact.id).where(Contact.account_id == account_id, Contact.deleted_at.is_(None),
                                                        Contact.is_primary.is_(True)).limit(1)).first() is not None


def add_contact(uow: UnitOfWork, settings: Settings, principal: Principal, account_id: uuid.UUID, fields: dict,
                *, contact_id: uuid.UUID | None = None) -> Contact:
    account = writable_account(uow, principal, account_id)
    return _new_contact(uow, settings, account, fields, created_by=principal.user_id, actor=principal.user_id,
                        contact_id=contact_id)


def _new_contact(uow, settings, account: Account, fields: dict, *, created_by: str, actor, contact_id=None) -> Contact:
    """The first contact of an account is its primary one; a new primary contact demotes the old."""
    now = utcnow()
    primary = fields.pop("is_primary", None)
    if primary is None:
        primary = not _has_primary(uow, account.id)
    contact = Contact(id=contact_id or uuid.uuid4(), account_id=account.id, version=1, is_primary=primary,
                      created_by=created_by, created_at=now, updated_at=now, **fields)
    if primary:
        _make_primary(uow, contact)
    uow.session.add(contact)
    uow.publish(*event(settings, "contact.created", account.id, {"contact": contact}, actor=actor))
    return contact


def get_contact(uow: UnitOfWork, principal: Principal, contact_id: uuid.UUID) -> Contact:
    return _visible_contact(uow, principal, contact_id)[0]


def list_contacts(uow: UnitOfWork, principal: Principal, args: dict, account_id: uuid.UUID | None = None):
    stmt = select(Contact).where(Contact.deleted_at.is_(None))
    if account_id is not None:
        visible_account(uow, principal, account_id)  # 404 for an account the caller may not see
        stmt = stmt.where(Contact.account_id == account_id)
    else:
        stmt = stmt.join(Account, Account.id == Contact.account_id).where(
            Account.deleted_at.is_(None), account_visible(principal))
        if args.get("account_id") is not None:
            stmt = stmt.where(Contact.account_id == args["account_id"])
    if args.get("q"):
        needle = f"%{args['q'].lower()}%"
        stmt = stmt.where(func.lower(Contact.name).like(needle) | func.lower(Contact.email).like(needle))
    return paginate(uow.session, stmt, model=Contact, sort=SortSpec("created_at", descending=False),
                    limit=args["limit"], cursor=args.get("cursor"))


def update_contact(uow: UnitOfWork, settings: Settings, principal: Principal, contact_id: uuid.UUID, changes: dict,
                   check_version) -> Contact:
    contact, account = _visible_contact(uow, principal, contact_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    check_version(contact.version)
    changed = {k: v for k, v in changes.items() if getattr(contact, k) != v}
    if not changed:
        return contact
    if changed.get("is_primary") is True:
        _make_primary(uow, contact)
    for name, value in changed.items():
        setattr(contact, name, value)
    contact.updated_at = utcnow()
    uow.session.flush()
    uow.publish(*event(settings, "contact.updated", account.id, {"contact": contact,
                                                                 "changed": sorted(changed)}, actor=principal.user_id))
    return contact


def delete_contact(uow: UnitOfWork, settings: Settings, principal: Principal, contact_id: uuid.UUID) -> None:
    contact, account = _visible_contact(uow, principal, contact_id, for_update=True)
    domain.check_may_write(principal, account.owner_id, account.team_id)
    contact.deleted_at = contact.updated_at = utcnow()
    contact.is_primary = False
    uow.session.flush()
    uow.publish(*event(settings, "contact.deleted", account.id, {"contact": contact},
                       actor=principal.user_id))


# ---- opportunities -------------------------------------------------------------------------------------
def visible_opportunity(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID, *, for_update=False) -> Opportunity:
    opp = OpportunityRepository(uow.session, principal).get(opp_id, for_update=for_update)
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
    items, cursor = OpportunityRepository(uow.session, principal).list(
        args, sort=sort, limit=args.pop("limit"), cursor=args.pop("cursor", None))
    return render_opportunities(uow, items), cursor


def _new_opportunity(uow, settings, account: Account, fields: dict, *, owner_id, team_id, created_by, actor,
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
    _opportunity_event(uow, settings, "opportunity.created", opp, actor)
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
    owner_id, team_id = _ownership(uow, principal, fields.pop("owner_id", None))
    return _new_opportunity(uow, settings, account, fields, owner_id=owner_id, team_id=team_id,
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
    _opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": sorted(changed)})
    if _COLLISION_FIELDS & set(changed):
        detection.detect(uow, settings, opp, _account_name(uow, opp.account_id), principal.user_id)
    return opp


def delete_opportunity(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID) -> None:
    opp = writable_opportunity(uow, principal, opp_id)
    opp.deleted_at = opp.updated_at = utcnow()
    uow.session.flush()
    detection.forget(uow, opp.id)
    _opportunity_event(uow, settings, "opportunity.deleted", opp, principal.user_id)


def move_stage(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, target: str,
               check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    pipeline = stages(uow)
    domain.check_stage_move(pipeline, opp.status, opp.stage, target, opp.checklist_done or {})
    if target == opp.stage:
        return render_opportunities(uow, [opp])[0]
    now = utcnow()
    previous, entered = opp.stage, opp.stage_entered_at
    opp.stage, opp.probability = target, domain.stage_of(pipeline, target)["probability"]
    opp.stage_entered_at = opp.updated_at = now
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.stage_changed", opp, principal.user_id, {
        "from": previous, "to": target, "time_in_stage_seconds": int((now - entered).total_seconds()),
        "entered_previous_at": entered})
    return opp


def tick_checklist(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, key: str,
                   done: bool) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    domain.check_open(opp.status)
    stage = domain.stage_of(stages(uow), opp.stage) or {"checklist": []}
    if key not in {i["key"] for i in stage.get("checklist", [])}:
        raise NotFound(f"no checklist item {key!r} in stage {opp.stage!r}")
    marks = dict(opp.checklist_done or {})
    marks[domain.done_key(opp.stage, key)] = done
    if marks == (opp.checklist_done or {}):
        return render_opportunities(uow, [opp])[0]
    opp.checklist_done, opp.updated_at = marks, utcnow()
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": ["checklist"]})
    return opp


def _close(uow: UnitOfWork, opp: Opportunity, status: str) -> None:
    domain.check_open(opp.status)
    now = utcnow()
    opp.status, opp.closed_at, opp.updated_at = status, now, now
    opp.cycle_days = (now - opp.created_at).days
    opp.probability = 100 if status == "won" else 0
    detection.forget(uow, opp.id)


def win(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, data: dict,
        check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    _close(uow, opp, "won")
    if data.get("amount") is not None:
        opp.amount = data["amount"]
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.won", opp, principal.user_id)
    return opp


def lose(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, reason: str,
         check_version) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    check_version(opp.version)
    _close(uow, opp, "lost")
    opp.lost_reason = reason
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.lost", opp, principal.user_id, {"reason": reason})
    return opp


def set_opportunity_team(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID,
                         members: list[dict]) -> Opportunity:
    opp = writable_opportunity(uow, principal, opp_id)
    members = _check_members(uow, members)
    uow.session.execute(delete(OpportunityMember).where(OpportunityMember.opportunity_id == opp.id))
    uow.session.add_all([OpportunityMember(opportunity_id=opp.id, **m) for m in members])
    opp.updated_at = utcnow()
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {"changed": ["team"]})
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
    seen = OpportunityRepository(uow.session, principal).visible_ids([r[1].id for r in rows])
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


# ---- activities and expenses -----------------------------------------------------------------------------
def log_activity(uow: UnitOfWork, settings: Settings, principal: Principal, data: dict, *,
                 account_id: uuid.UUID | None = None, opp_id: uuid.UUID | None = None) -> Activity:
    """Anyone who sees the record may log what they did on it: a virtual-team member too (the
    service role exists for exactly this)."""
    if opp_id is not None:
        record = visible_opportunity(uow, principal, opp_id)
        account_id = record.account_id
        members = select(OpportunityMember.user_id).where(OpportunityMember.opportunity_id == record.id)
    else:
        record = visible_account(uow, principal, account_id)
        members = select(AccountMember.user_id).where(AccountMember.account_id == record.id)
    subject = record.id
    team = sorted(uow.session.execute(members).scalars())
    now = utcnow()
    activity = Activity(id=uuid.uuid4(), account_id=account_id, opportunity_id=opp_id, kind=data["kind"],
                        summary=data.get("summary"), occurred_at=data.get("occurred_at") or now,
                        next_contact_at=data.get("next_contact_at"), created_by=principal.user_id, created_at=now)
    uow.session.add(activity)
    uow.publish(*event(settings, "activity.logged", subject, {
        "activity_id": activity.id, "account_id": account_id, "opportunity_id": opp_id,
        "kind": activity.kind, "summary": activity.summary, "occurred_at": activity.occurred_at,
        "next_contact_at": activity.next_contact_at,
        "logged_by": principal.user_id, "owner_id": record.owner_id, "team_id": record.team_id,
        "member_ids": team}, actor=principal.user_id))
    return activity


def list_activities(uow: UnitOfWork, principal: Principal, args: dict, *, account_id: uuid.UUID | None = None,
                    opp_id: uuid.UUID | None = None):
    """An account's activities include those on its opportunities the caller sees; newest first."""
    if opp_id is not None:
        stmt = select(Activity).where(Activity.opportunity_id == visible_opportunity(uow, principal, opp_id).id)
    else:
        # Seeing the account is not seeing every deal on it: another rep's deal keeps its history.
        visible_deals = select(Opportunity.id).where(Opportunity.deleted_at.is_(None), opportunity_visible(principal))
        stmt = select(Activity).where(Activity.account_id == visible_account(uow, principal, account_id).id,
                                      Activity.opportunity_id.is_(None) | Activity.opportunity_id.in_(visible_deals))
    return paginate(uow.session, stmt, model=Activity, sort=SortSpec("occurred_at", descending=True),
                    limit=args["limit"], cursor=args.get("cursor"))


def add_expense(uow: UnitOfWork, settings: Settings, principal: Principal, opp_id: uuid.UUID, data: dict) -> Expense:
    opp = writable_opportunity(uow, principal, opp_id)
    total = (opp.expense_total or Decimal("0")) + data["amount"]
    if total >= MONEY_MAX:
        raise ValidationFailed("the opportunity's expenses would exceed what an amount can hold",
                               errors={"amount": [f"the total must stay below {MONEY_MAX}"]})
    expense = Expense(id=uuid.uuid4(), opportunity_id=opp.id, currency=opp.currency, created_by=principal.user_id,
                      created_at=utcnow(), **data)
    uow.session.add(expense)
    opp.expense_total = total
    opp.updated_at = utcnow()
    uow.session.flush()
    _opportunity_event(uow, settings, "opportunity.updated", opp, principal.user_id, {
        "changed": ["expense_total"], "expense": {"id": str(expense.id), "category": expense.category,
                                                  "amount": str(expense.amount)}})
    return expense


def list_expenses(uow: UnitOfWork, principal: Principal, opp_id: uuid.UUID, args: dict):
    opp = visible_opportunity(uow, principal, opp_id)
    return paginate(uow.session, select(Expense).where(Expense.opportunity_id == opp.id), model=Expense,
                    sort=SortSpec("created_at", descending=True), limit=args["limit"], cursor=args.get("cursor"))
