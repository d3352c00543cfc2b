"""Orders HTTP API: the product catalogue here; orders (order_api) and approvals (approval_api) beside it,
all in one app. Thin routes: parse, call one use case, commit, render."""
from __future__ import annotations

import uuid

from marshmallow import RAISE

from crmkit.etag import IF_MATCH, require_if_match, tagged
from crmkit.idempotency import idempotent
from crmkit.web import Blueprint, create_service_app, ctx, large_body, principal, roles, uploaded_csv

from . import catalogue_import, products
from .approval_api import approvals_blp
from .bootstrap import context
from .commission_api import commission_blp
from .domain import CATALOGUE_READERS
from .order_api import orders_blp, quota_blp
from .performance_api import performance_blp
from .schemas import (
    ImportResultSchema,
    ProductCreateSchema,
    ProductListArgsSchema,
    ProductPageSchema,
    ProductSchema,
    ProductWriteSchema,
)

products_blp = Blueprint("products", __name__, description="The product catalogue (admins write it)")



@products_blp.route("/products", methods=["POST"])
@products_blp.arguments(ProductCreateSchema)
@idempotent
@products_blp.response(201, ProductSchema)
@roles("admin")
def create_product(fields):
    """Add a product to the catalogue (admin); its SKU is unique and never changes."""
    with ctx().db.uow() as uow:
        product = products.create_product(uow, ctx().settings, principal(), fields)
        uow.commit()
    return product, 201, {**tagged(product), "Location": f"/api/v1/products/{product.id}"}


@products_blp.route("/products/import", methods=["POST"])
@products_blp.response(200, ImportResultSchema)
@products_blp.doc(requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {
        "type": "string", "format": "binary", "minLength": 1,
        "description": "the CSV: a header row naming sku, name, list_price (and category, unit_cost, currency, "
                       "active, excluded_from_quota), in UTF-8 or GB18030"}}}}}})
@roles("admin")
@large_body
def import_products():
    """Create or update products from a CSV file (admin); all rows or none.

    The file must be text in UTF-8 or GB18030 with a header row, and not empty; each row is checked
    as a create would be, and a file with any bad row changes nothing (422 naming each bad line).
    """
    _filename, content = uploaded_csv()
    with ctx().db.uow() as uow:
        counts = catalogue_import.import_catalogue(uow, ctx().settings, principal(), content)
        uow.commit()
    return counts


@products_blp.route("/products", methods=["GET"])
@products_blp.arguments(ProductListArgsSchema, location="query", unknown=RAISE)
@products_blp.response(200, ProductPageSchema)
@roles(*CATALOGUE_READERS)
def list_products(args):
    """List the catalogue, oldest first; unit cost and margin only for those who may see them."""
    with ctx().db.uow(readonly=True) as uow:
        items, next_cursor = products.list_products(uow, args)
    return {"items": items, "next_cursor": next_cursor}


@products_blp.route("/products/<uuid:product_id>", methods=["GET"])
@products_blp.response(200, ProductSchema)
@roles(*CATALOGUE_READERS)
def get_product(product_id: uuid.UUID):
    """Read one product."""
    with ctx().db.uow(readonly=True) as uow:
        product = products.get_product(uow, product_id)
    return product, 200, tagged(product)


@products_blp.route("/products/<uuid:product_id>", methods=["PATCH"])
@products_blp.arguments(ProductWriteSchema)
@products_blp.response(200, ProductSchema)
@products_blp.doc(parameters=[IF_MATCH])
@roles("admin")
def patch_product(changes, product_id: uuid.UUID):
    """Change a product (admin): price, cost, category, active, excluded from quota.

    Needs If-Match with the ETag you last read.
    """
    with ctx().db.uow() as uow:
        product = products.update_product(uow, ctx().settings, principal(), product_id, changes, require_if_match)
        uow.commit()
    return product, 200, tagged(product)


@products_blp.route("/products/<uuid:product_id>", methods=["DELETE"])
@products_blp.response(204)
@roles("admin")
def delete_product(product_id: uuid.UUID):
    """Take a product out of the catalogue (admin): inactive, kept for the orders that name it."""
    with ctx().db.uow() as uow:
        products.deactivate_product(uow, ctx().settings, principal(), product_id)
        uow.commit()


def create_app():
    return create_service_app(context=context(), title="CRM orders service",
                              blueprints=[products_blp, orders_blp, quota_blp, approvals_blp,
                                        performance_blp, commission_blp])
