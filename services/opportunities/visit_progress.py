"""What followed a visit: for each visit done on an account, how long after its check-in the rep next
moved one of their deals on that account to another stage (won and lost included) or had an order
of theirs on it confirmed (`Visit.followed_after`, seconds, within FOLLOW_WINDOW). Weekly progress
counts a visit effective when that came within the days asked, with one aggregate instead of
joining every visit to every move at read time (a week of 1,000 reps is 40,000 visits).

Kept where what it depends on changes: a check-in, a stage move, an order confirmed, cancelled or
given to someone else, each refreshing only the visits that change can touch."""
from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_right

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmkit.db import UnitOfWork

from .day_db import OrderFact, StageMove, Visit

FOLLOW_WINDOW = dt.timedelta(days=90)  # the longest effective_within_days


class VisitProgressRepository:
    """The rows refresh() reads: a rep's done visits on an account, and the moments that followed."""

    def __init__(self, session: Session):
        self.session = session

    def lock(self, owner_id: str, account_id) -> None:
        """One refresh of a rep's account at a time (PostgreSQL): a check-in and a stage move committing
        side by side would each miss the other's row and leave the gap unknown."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(
                f"visit-progress:{owner_id}:{account_id}", 0))))

    def done_visits(self, owner_id: str, account_id, since: dt.datetime | None,
                    until: dt.datetime | None) -> list[Visit]:
        stmt = select(Visit).where(Visit.owner_id == owner_id, Visit.account_id == account_id, Visit.status == "done")
        if since is not None:
            stmt = stmt.where(Visit.checked_in_at >= since)
        if until is not None:
            stmt = stmt.where(Visit.checked_in_at <= until)
        return self.session.execute(stmt).scalars().all()

    def progress(self, owner_id: str, account_id, start: dt.datetime, end: dt.datetime) -> list[tuple]:
        """(moment, team) when the rep's deals on the account moved stage, and their orders on it were
        confirmed, in (start, end]."""
        s = self.session
        return [*s.execute(select(StageMove.moved_at, StageMove.team_id).where(
                    StageMove.owner_id == owner_id, StageMove.account_id == account_id, StageMove.moved_at > start,
                    StageMove.moved_at <= end)).all(),
                *s.execute(select(OrderFact.confirmed_at, OrderFact.team_id).where(
                    OrderFact.owner_id == owner_id, OrderFact.account_id == account_id,
                    OrderFact.cancelled_at.is_(None), OrderFact.confirmed_at > start,
                    OrderFact.confirmed_at <= end)).all()]


def refresh(uow: UnitOfWork, owner_id: str | None, account_id, *, since: dt.datetime | None = None,
            until: dt.datetime | None = None) -> None:
    """Recompute followed_after for the rep's done visits on the account checked in between `since`
    and `until` (the only ones a moment appearing or going at `until` can change: since = until -
    FOLLOW_WINDOW). Only the rep's deals and orders of the visit's team count: whoever may see the
    visit sees those (another team's record must not move a figure they are shown)."""
    if owner_id is None or account_id is None:
        return
    rows = uow.repository(VisitProgressRepository)
    rows.lock(owner_id, account_id)
    done = rows.done_visits(owner_id, account_id, since, until)
    if not done:
        return
    first = min(v.checked_in_at for v in done)
    moments = sorted(rows.progress(owner_id, account_id, first, max(v.checked_in_at for v in done) + FOLLOW_WINDOW),
                     key=lambda m: m[0])
    for visit in done:
        theirs = [at for at, team in moments if team == visit.team_id]
        i = bisect_right(theirs, visit.checked_in_at)  # the first moment after the check-in
        gap = theirs[i] - visit.checked_in_at if i < len(theirs) else None
        # Rounded up: a move a fraction of a second past N days is not "within N days".
        followed = math.ceil(gap.total_seconds()) if gap is not None and gap <= FOLLOW_WINDOW else None
        if visit.followed_after != followed:
            visit.followed_after = followed
