"""What one lead transaction (a request, a consumer batch, an import chunk) remembers while it runs,
so a batch of hundreds of leads reads each rule document, team and cursor once and finds its own new
leads without flushing before every lookup. One typed object per unit of work (`uow.state`), gone
with the transaction."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from crmkit.db import UnitOfWork

from .db import AssignmentCursor, Lead


@dataclass
class Batch:
    rules: dict[str, list[dict]] = field(default_factory=dict)  # rule documents' rules, by name
    reps: dict[str, list[str]] = field(default_factory=dict)  # active reps, by team
    loads: dict[str, dict[str, int]] = field(default_factory=dict)  # open leads per active rep, by team
    cursors: dict[str, AssignmentCursor] = field(default_factory=dict)  # round-robin cursors (locked), by team
    by_key: dict[str, Lead] = field(default_factory=dict)  # leads created or merged here, by dedupe key
    created: set[uuid.UUID] = field(default_factory=set)  # ids of the leads created here
    prefetched: set[str] = field(default_factory=set)  # dedupe keys already looked up (and locked)


def batch(uow: UnitOfWork) -> Batch:
    if not isinstance(uow.state, Batch):
        uow.state = Batch()
    return uow.state
