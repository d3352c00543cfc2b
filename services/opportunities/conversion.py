"""lead.converted (crm.leads.v1): the account, contact and opportunity a converted lead becomes,
under the ids the leads service gave the user, or a refusal (lead.conversion_rejected) that rolls the
lead back with the reason."""
from __future__ import annotations

from marshmallow import ValidationError

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow
from crmkit.settings import Settings

from . import domain, people
from .accounts import account_event
from .contacts import new_contact
from .db import Account, AccountRepository, Contact, Opportunity
from .deals import new_opportunity
from .events import LEAD_CONVERSION_REJECTED, LEAD_CONVERTED, event
from .schemas import LeadConvertedSchema

_lead_converted = LeadConvertedSchema()


def handlers(settings: Settings) -> dict:
    """The dispatch table of crm.leads.v1 for this service: lead.converted alone."""
    return {(LEAD_CONVERTED, 1): lambda uow, envelope: apply_lead_converted(uow, settings, envelope)}


def apply_lead_converted(uow: UnitOfWork, settings: Settings, envelope: dict) -> Opportunity | None:
    """Create the account (unless it exists), the contact and the opportunity under the ids the leads
    service already gave the user. Ids make it idempotent beyond the consumer's own bookkeeping:
    a second delivery with a new event id still creates nothing."""
    try:
        data = _lead_converted.load(envelope["data"])
    except ValidationError as exc:
        raise Reject(f"invalid lead.converted: {exc.messages}") from None
    if data["owner_id"] is None:
        raise Reject("lead.converted without an owner")
    part_a, part_c, part_o = data["account"], data["contact"], data["opportunity"]
    existing_opp = uow.session.get(Opportunity, part_o["id"])
    if existing_opp is not None:
        return existing_opp
    actor, owner, team = envelope.get("actor"), data["owner_id"], data["team_id"]
    if (successor := people.successor_now(uow, owner)) != owner:
        # The lead's owner was handed over before this conversion arrived: the deal is the successor's.
        owner, team = successor, getattr(people.user(uow, successor), "team_id", None) or team
    created_by = f"lead:{part_o.get('source_lead_id') or envelope['subject']}"
    account = uow.session.get(Account, part_a["id"])
    refusal = _conversion_refusal(uow, account, part_a, owner, team)
    if refusal is not None:
        # Not a dead letter: the request was valid when the leads service accepted it, and the lead
        # must not point at records that will never exist. The leads service rolls the lead back
        # and shows the reason on it.
        uow.publish(*event(settings, LEAD_CONVERSION_REJECTED, part_o.get("source_lead_id") or envelope["subject"], {
            "lead_id": str(part_o.get("source_lead_id") or envelope["subject"]),
            "account_id": str(part_a["id"]), "contact_id": str(part_c["id"]), "opportunity_id": str(part_o["id"]),
            "reason": refusal}, actor=actor))
        return None
    if account is None:
        now = utcnow()
        account = Account(id=part_a["id"], name=part_a["name"], type=part_a["type"], industry=part_a.get("industry"),
                          region=part_a.get("region"), tier="unranked", owner_id=owner, team_id=team,
                          created_by=created_by, created_at=now, updated_at=now, version=1)
        uow.session.add(account)
        account_event(uow, settings, "account.created", account, actor, {"source_lead_id": envelope["subject"]})
    if uow.session.get(Contact, part_c["id"]) is None:
        fields = {k: part_c.get(k) for k in ("name", "email", "phone")}
        # Primary on a new account; on an existing one only if it has no primary contact yet.
        fields["is_primary"] = part_c["is_primary"] if account.created_by == created_by else None
        new_contact(uow, settings, account, fields, created_by=created_by, actor=actor, contact_id=part_c["id"])
    fields = {k: part_o[k] for k in ("name", "amount", "currency", "expected_close_date", "region", "source_lead_id",
                                    "products") if k in part_o}
    return new_opportunity(uow, settings, account, fields, owner_id=owner, team_id=team, created_by=created_by,
                            actor=actor, opp_id=part_o["id"])


# One reason for every refusal: a lead's conversion_error must not tell whether an account the
# converter cannot see exists, was deleted, or is someone else's.
CONVERSION_REFUSED = ("the account named in the conversion cannot take this deal: it does not exist, was deleted, "
                      "or is not the lead owner's to sell into")


def _conversion_refusal(uow: UnitOfWork, account: Account | None, part_a: dict, owner: str,
                        team: str | None) -> str | None:
    """Why a conversion into this account cannot be applied, or None. The convert call named the
    account and the leads service knows no accounts, so this is where the request is checked: the
    account must exist (a client-chosen id never creates one), be live, and be one the lead's owner
    may open deals on (its owner or their leader: the same rule as POST /opportunities)."""
    if account is None:
        return CONVERSION_REFUSED if part_a.get("existing") else None
    who = people.principal_of(uow, owner, team)
    if account.deleted_at is not None or AccountRepository(uow.session, who).get(account.id) is None \
            or not domain.may_write(who, account.owner_id, account.team_id):
        return CONVERSION_REFUSED
    return None
