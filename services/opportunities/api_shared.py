"""What the opportunities service's route modules share: who may call them, and the ETag header."""
from __future__ import annotations

from crmkit.etag import etag_for

SELLERS = ("rep", "manager", "executive", "admin")
DEAL_READERS = (*SELLERS, "service")
FUNNEL_READERS = (*SELLERS, "marketing")


def tagged(record) -> dict:
    """The ETag of a record's version, for the answer's headers."""
    return {"ETag": etag_for(record.version)}
