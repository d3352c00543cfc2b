"""Converting a lead: the ids are decided at once, the opportunities service creates the records
from lead.converted, and a conversion it refuses (lead.conversion_rejected) rolls the lead back."""
from __future__ import annotations

import uuid

from crmkit.auth import Principal
from crmkit.consumer import Reject
from crmkit.db import UnitOfWork, utcnow
from crmkit.settings import Settings

from . import domain
from .db import Lead
from .lifecycle import follow_up_sla, publish, visible_lead
from .people import successor_now, team_of


def convert_lead(uow: UnitOfWork, settings: Settings, principal: Principal, lead_id: uuid.UUID, data: dict) -> dict:
    """Decide the ids now, so the caller can use them at once; the opportunities service creates
    the account, contact and opportunity under these ids when it consumes lead.converted."""
    lead = visible_lead(uow, principal, lead_id, for_update=True)
    domain.check_may_modify(principal)
    domain.check_convertible(lead.status)
    if lead.owner_id is None:  # converting a queued lead makes it the converter's
        lead.owner_id, lead.team_id = principal.user_id, principal.primary_team
    existing_account = data.get("account_id")
    ids = {"account_id": existing_account or uuid.uuid4(), "contact_id": uuid.uuid4(), "opportunity_id": uuid.uuid4()}
    lead.account_id, lead.contact_id, lead.opportunity_id = ids["account_id"], ids["contact_id"], ids["opportunity_id"]
    lead.converted_from_status, lead.conversion_error = lead.status, None
    lead.status, lead.converted_at, lead.follow_up_due_at = "converted", utcnow(), None
    lead.updated_at = lead.converted_at
    uow.session.flush()
    publish(uow, settings, "lead.converted", lead, principal.user_id, extra={
        "owner_id": lead.owner_id, "team_id": lead.team_id,
        "account": {"id": str(ids["account_id"]), "existing": existing_account is not None,
                    "name": lead.company or lead.contact_name, "type": "b2b" if lead.company else "b2c",
                    "industry": lead.industry, "region": lead.region},
        "contact": {"id": str(ids["contact_id"]), "name": lead.contact_name or lead.company, "email": lead.email,
                    "phone": lead.phone, "is_primary": True},
        "opportunity": {"id": str(ids["opportunity_id"]), "name": data["opportunity_name"],
                        "amount": str(data["amount"]), "currency": data.get("currency") or lead.currency,
                        "expected_close_date": data["expected_close_date"], "region": lead.region,
                        "source_lead_id": str(lead.id), "products": []},
    })
    return ids


def roll_back_conversion(uow: UnitOfWork, settings: Settings, envelope: dict) -> Lead | None:
    """lead.conversion_rejected (crm.opportunities.v1): the opportunities service could not apply the
    conversion (the account was deleted, handed to someone else, or is not the owner's to sell
    into). The lead goes back to where it was, without the ids that will never exist, and says why;
    its owner can convert it again. A replay, or a lead converted again since, is left alone."""
    data = envelope["data"]
    try:
        lead_id, opportunity_id = uuid.UUID(str(data["lead_id"])), uuid.UUID(str(data["opportunity_id"]))
        reason = str(data["reason"])[:2000]
    except (KeyError, ValueError, TypeError) as exc:
        raise Reject(f"invalid lead.conversion_rejected: {exc!r}") from None
    lead = uow.session.get(Lead, lead_id, with_for_update=True)
    if lead is None or lead.status != "converted" or lead.opportunity_id != opportunity_id:
        return None
    now = utcnow()
    if lead.owner_id and (successor := successor_now(uow, lead.owner_id)) != lead.owner_id:
        lead.owner_id, lead.team_id = successor, team_of(uow, successor)  # its owner left meanwhile
    lead.status = lead.converted_from_status or "qualified"
    lead.account_id = lead.contact_id = lead.opportunity_id = lead.converted_at = None
    lead.conversion_error = reason
    lead.follow_up_due_at = now + follow_up_sla() if lead.owner_id else None
    lead.updated_at = now
    uow.session.flush()
    publish(uow, settings, "lead.updated", lead, envelope.get("actor"), extra={
        "changed": ["account_id", "contact_id", "conversion_error", "converted_at", "opportunity_id", "status"],
        "reason": "conversion_rejected"})
    return lead
