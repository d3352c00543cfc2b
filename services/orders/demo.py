"""`python -m services.orders seed-demo` (make run): a small catalogue for the demo organisation, when
the catalogue is empty, so a demo user can place an order at once. Through the ordinary use case,
so each product is published as product.created like any other."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from crmkit.auth import Principal
from crmkit.db import UnitOfWork
from crmkit.settings import Settings

from .db import Product
from .products import create_product

CATALOGUE = [
    ("LATHE-5X", "Five-axis CNC lathe", "machines", "480000.00", "312000.00", False),
    ("MILL-3X", "Three-axis milling centre", "machines", "260000.00", "171000.00", False),
    ("SPINDLE-S", "Spindle service kit", "parts", "12000.00", "5400.00", False),
    ("CAM-PRO", "CAM software, one seat a year", "software", "36000.00", "4000.00", False),
    ("DEMO-UNIT", "Demonstration unit (loan)", "samples", "0.00", "90000.00", True),
]


def seed(uow: UnitOfWork, settings: Settings) -> int:
    if uow.session.execute(select(Product.id).limit(1)).first():
        return 0
    system = Principal(user_id="system", role="admin")
    for sku, name, category, price, cost, excluded in CATALOGUE:
        create_product(uow, settings, system, {"sku": sku, "name": name, "category": category,
                                               "list_price": Decimal(price), "unit_cost": Decimal(cost),
                                               "excluded_from_quota": excluded})
    return len(CATALOGUE)
