"""Settings documents (the approval policy; the KPI scheme, commission plans and alert rules): each
one document, read whole and written whole with If-Match, with a default until someone writes it
(version 0). `model` is the table that holds it (a VersionedDocumentColumns table)."""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from crmkit.auth import Principal
from crmkit.db import UnitOfWork, utcnow
from crmkit.etag import tagged

from .performance_db import PerformanceDocument


def read(uow: UnitOfWork, name: str, default: dict, *, model=PerformanceDocument, for_update: bool = False):
    row = uow.session.get(model, name, with_for_update=for_update)
    return row or model(name=name, document=default, version=0, updated_at=utcnow())


def write(uow: UnitOfWork, principal: Principal, name: str, default: dict, document: dict,
          check_version: Callable[[int], None], *, model=PerformanceDocument,
          check: Callable[[dict], None] | None = None):
    """Replace the document; `check_version` raises unless the caller's If-Match names the current
    version (the default's is 0); then `check`, if given, refuses a document that does not hold
    together."""
    row = read(uow, name, default, model=model, for_update=True)
    check_version(row.version)
    if check is not None:
        check(document)
    if row.version == 0:
        uow.session.add(row)
        row.version = 1
    row.document, row.updated_by, row.updated_at = plain(document), principal.user_id, utcnow()
    uow.session.flush()
    return row


def response(row) -> tuple[dict, int, dict]:
    """A route's answer: the document with its version, and its ETag."""
    return {**row.document, "version": row.version, "updated_by": row.updated_by,
            "updated_at": row.updated_at}, 200, tagged(row)


def plain(value):
    """The document as JSON holds it: decimals as their text ("1.5", not 1.5 as a float)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
