"""What the opportunities service's route modules share: who may call them, and the ETag header (the kit's)."""
from __future__ import annotations

from crmkit.etag import tagged

__all__ = ["DEAL_READERS", "FUNNEL_READERS", "LEADERS", "SELLERS", "tagged"]

SELLERS = ("rep", "manager", "executive", "admin")
DEAL_READERS = (*SELLERS, "service")
FUNNEL_READERS = (*SELLERS, "marketing")
LEADERS = ("manager", "executive", "admin")
