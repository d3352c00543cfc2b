"""What followed a visit: for each visit done on an account, how long after its check-in the rep next
moved one of their deals on that account to another stage (won and lost included) or had an order
of theirs on it confirmed (`Visit.followed_after`, seconds, within FOLLOW_WINDOW). Weekly progress
counts a visit effective when that came within the days asked, with one aggregate instead of
joining every visit to every move at read time (a week of 1,000 reps is 40,000 visits).

Kept where what it depends on changes: a check-in, a stage move, an order confirmed or cancelled."""
from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmkit.db import UnitOfWork

from .db import OrderFact, StageMove, Visit

FOLLOW_WINDOW = dt.timedelta(days=90)  # the longest effective_within_days


class VisitProgressRepository:
    """The rows refresh() reads: a rep's done visits on an account, and the moments that followed."""

    def __init__(self, session: Session):
        self.session = session

    def done_visits(self, owner_id: str, account_id) -> list[Visit]:
        return self.session.execute(select(Visit).where(Visit.owner_id == owner_id, Visit.account_id == account_id,
                                                        Visit.status == "done")).scalars().all()

    def progress(self, owner_id: str, account_id) -> list[dt.datetime]:
        """When the rep's deals on the account moved stage, and their orders on it were confirmed."""
        s = self.session
        return [*s.execute(select(StageMove.moved_at).where(StageMove.owner_id == owner_id,
                                                            StageMove.account_id == account_id)).scalars(),
                *s.execute(select(OrderFact.confirmed_at).where(
                    OrderFact.owner_id == owner_id, OrderFact.account_id == account_id,
                    OrderFact.cancelled_at.is_(None), OrderFact.confirmed_at.is_not(None))).scalars()]


def refresh(uow: UnitOfWork, owner_id: str | None, account_id) -> None:
    """Recompute followed_after for the rep's done visits on the account."""
    if owner_id is None or account_id is None:
        return
    rows = uow.repository(VisitProgressRepository)
    done = rows.done_visits(owner_id, account_id)
    if not done:
        return
    moments = sorted(rows.progress(owner_id, account_id))
    for visit in done:
        i = bisect_right(moments, visit.checked_in_at)  # the first moment after the check-in
        gap = moments[i] - visit.checked_in_at if i < len(moments) else None
        # Rounded up: a move a fraction of a second past N days is not "within N days".
        followed = math.ceil(gap.total_seconds()) if gap is not None and gap <= FOLLOW_WINDOW else None
        if visit.followed_after != followed:
            visit.followed_after = followed
