"""opportunity.won (crm.opportunities.v1) becomes a draft order for the deal's account and products,
exactly once: the order's unique opportunity_id makes a replay, or a second won event of the same
deal, create nothing. A deal that cannot be placed (unknown products, a malformed event) is
dead-lettered with the reason, to be fixed and replayed; nothing is half-created."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from sqlalchemy import select

from crmkit.consumer import Reject
from crmkit.db import UnitOfWork
from crmkit.directory import holder_now
from crmkit.errors import ValidationFailed
from crmkit.settings import Settings

from . import domain
from .db import CompletedHandover, DirectoryUser, Order
from .orders import new_order, price_lines


class _Product(Schema):
    class Meta:
        unknown = EXCLUDE

    sku = fields.String(required=True, validate=validate.Length(min=1, max=64))
    qty = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=domain.MAX_QTY))
    unit_price = fields.Decimal(required=True, places=2, validate=validate.Range(min=0, max=domain.MONEY_LIMIT,
                                                                                 max_inclusive=False))


class _Opportunity(Schema):
    """opportunity.won.v1's `data.opportunity`, the part this service reads."""

    class Meta:
        unknown = EXCLUDE

    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    owner_id = fields.String(required=True, allow_none=True)
    team_id = fields.String(required=True, allow_none=True)
    currency = fields.String(required=True, validate=validate.Length(equal=3))
    products = fields.List(fields.Nested(_Product), required=True,
                           validate=validate.Length(max=domain.MAX_LINES))


_opportunity = _Opportunity()


def handlers(settings: Settings) -> dict:
    def order_from_won_deal(uow: UnitOfWork, envelope: dict) -> None:
        try:
            deal = _opportunity.load(((envelope.get("data") or {}).get("opportunity")) or {})
        except ValidationError as exc:
            raise Reject(f"invalid opportunity.won: {exc.messages}") from None
        if uow.session.execute(select(Order.id).where(Order.opportunity_id == deal["id"])).first():
            return  # this deal has its order already
        wanted = [{"sku": p["sku"], "qty": p["qty"], "unit_price": p["unit_price"]} for p in deal["products"]]
        try:
            # A product withdrawn since it was quoted is still what was sold.
            lines, currency = price_lines(uow, wanted, deal["currency"],
                                          allow_inactive={p["sku"].lower() for p in deal["products"]})
        except ValidationFailed as exc:
            raise Reject(f"won deal {deal['id']} cannot be placed: {exc.detail}: {exc.errors}") from None
        # A deal won by someone who has left since (a late or replayed event) is their successor's
        # order, as a handover would have made it; the owner's lock keeps a handover from racing it.
        owner, team = deal["owner_id"], deal["team_id"]
        holder = holder_now(uow, CompletedHandover, DirectoryUser, owner)
        if holder != owner:
            heir = uow.session.get(DirectoryUser, holder)
            owner, team = holder, heir.team_id if heir else None
        new_order(uow, settings, account_id=deal["account_id"], owner_id=owner, team_id=team,
                  created_by=envelope.get("actor") or deal["owner_id"] or "system", order_type="standard",
                  lines=lines, currency=currency or deal["currency"], payment_terms_days=domain.DEFAULT_TERMS_DAYS,
                  delivery_date=None, opportunity_id=deal["id"])

    return {("opportunity.won", 1): order_from_won_deal}
