"""Performance's settings documents (the KPI scheme, the commission plans, the alert rules): each one
document, read whole and written whole with If-Match, with a default until someone writes it
(version 0)."""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow

from .performance_db import PerformanceDocument


def read(uow: UnitOfWork, name: str, default: dict, *, for_update: bool = False) -> PerformanceDocument:
    row = uow.session.get(PerformanceDocument, name, with_for_update=for_update)
    return row or PerformanceDocument(name=name, document=default, version=0, updated_at=utcnow())


def write(uow: UnitOfWork, principal: Principal, name: str, default: dict, document: dict,
          check_version: Callable[[int], None]) -> PerformanceDocument:
    """Replace the document; `check_version` raises unless the caller's If-Match names the current
    version (the default's is 0)."""
    row = read(uow, name, default, for_update=True)
    check_version(row.version)
    if row.version == 0:
        uow.session.add(row)
        row.version = 1
    row.document, row.updated_by, row.updated_at = plain(document), principal.user_id, utcnow()
    uow.session.flush()
    return row


def view(row: PerformanceDocument) -> dict:
    return {**row.document, "version": row.version, "updated_by": row.updated_by, "updated_at": row.updated_at}


def plain(value):
    """The document as JSON holds it: decimals as their text ("1.5", not 1.5 as a float)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
