"""What one opportunities transaction (a request, a consumer batch) remembers while it runs: the
pipeline's stages and the people it has looked up (whom collision bookkeeping and announcements
name again and again). One typed object per unit of work (`uow.state`), gone with the transaction."""
from __future__ import annotations

from dataclasses import dataclass, field

from crmkit.auth import Principal
from crmkit.db import UnitOfWork


@dataclass
class Batch:
    stages: list[dict] | None = None  # the pipeline document's stages, once read
    principals: dict[tuple[str, str | None], Principal] = field(default_factory=dict)  # (user, team) -> as the replica knows them
    managers: dict[str | None, str | None] = field(default_factory=dict)  # user -> their team's manager


def batch(uow: UnitOfWork) -> Batch:
    if not isinstance(uow.state, Batch):
        uow.state = Batch()
    return uow.state
