"""The product catalogue: admins write it; everyone who sells or reports reads it (unit cost and
margin are left out by the schema for roles that may not see them). A SKU is unique and never
changes; a product is deactivated, not deleted, so the orders that name it keep their meaning."""
from __future__ import annotations

import uuid

from sqlalchemy import func, select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.errors import Conflict, NotFound
from crmkit.pagination import SortSpec, paginate
from crmkit.settings import Settings

from .db import Product
from .events import PRODUCT_CREATED, PRODUCT_UPDATED, event


def create_product(uow: UnitOfWork, settings: Settings, principal: Principal, fields: dict) -> Product:
    sku = fields["sku"]
    if uow.session.execute(select(Product.id).where(func.lower(Product.sku) == sku.lower())).first():
        raise Conflict(f"a product with SKU {sku} exists")
    now = utcnow()
    product = Product(id=uuid.uuid4(), version=1, created_at=now, updated_at=now,
                      currency=fields.pop("currency", None) or settings.default_currency,
                      active=fields.pop("active", True), excluded_from_quota=fields.pop("excluded_from_quota", False),
                      **fields)
    uow.session.add(product)
    uow.session.flush()  # the unique SKU is checked again by the database (two admins at once)
    uow.publish(*event(settings, PRODUCT_CREATED, product.id, {"product": product}, actor=principal.user_id))
    return product


def get_product(uow: UnitOfWork, product_id: uuid.UUID, *, for_update: bool = False) -> Product:
    product = uow.session.get(Product, product_id, with_for_update=for_update)
    if product is None:
        raise NotFound(f"product {product_id} not found")
    return product


def list_products(uow: UnitOfWork, args: dict):
    stmt = select(Product)
    if args.get("category") is not None:
        stmt = stmt.where(Product.category == args["category"])
    if args.get("active") is not None:
        stmt = stmt.where(Product.active.is_(args["active"]))
    if args.get("q"):
        needle = f"%{args['q'].lower()}%"
        stmt = stmt.where(func.lower(Product.sku).like(needle) | func.lower(Product.name).like(needle))
    return paginate(uow.session, stmt, model=Product, sort=SortSpec("created_at", descending=False),
                    limit=args["limit"], cursor=args.get("cursor"))


def update_product(uow: UnitOfWork, settings: Settings, principal: Principal, product_id: uuid.UUID, changes: dict,
                   check_version) -> Product:
    product = get_product(uow, product_id, for_update=True)
    check_version(product.version)
    changed = {k: v for k, v in changes.items() if getattr(product, k) != v}
    if not changed:
        return product
    for name, value in changed.items():
        setattr(product, name, value)
    product.updated_at = utcnow()
    uow.session.flush()
    uow.publish(*event(settings, PRODUCT_UPDATED, product.id, {"product": product, "changed": sorted(changed)},
                       actor=principal.user_id))
    return product


def deactivate_product(uow: UnitOfWork, settings: Settings, principal: Principal, product_id: uuid.UUID) -> None:
    """DELETE: the product leaves the catalogue for new orders (active = false) and stays for the
    orders that name it."""
    product = get_product(uow, product_id, for_update=True)
    if not product.active:
        return
    product.active, product.updated_at = False, utcnow()
    uow.session.flush()
    uow.publish(*event(settings, PRODUCT_UPDATED, product.id, {"product": product, "changed": ["active"]},
                       actor=principal.user_id))
