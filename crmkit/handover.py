"""What every record-owning service does with crm.directory.v1 (docs/handover.md), given how it moves
one leaver's records: keep the directory replica current; answer handover.requested by moving the
leaver's open records to the successor (or answering "failed" when the successor is no longer active)
and remembering it, so what arrives for the leaver later goes to the successor too; and when a
handed-over user is deactivated after their handover, move what they gained meanwhile."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .db import UnitOfWork, lock_keys
from .directory import (
    apply_directory_event,
    deactivated_user,
    directory_dispatch,
    handover_answer,
    handover_request,
    holder_now,
    owner_lock_key,
    remember_handover,
)

# move(uow, from_user, to_user, to_team, actor, handover_id) -> counts, at least {"moved": n}
Move = Callable[[UnitOfWork, str, str, "str | None", "str | None", "str | None"], dict]
# answer(uow, handover_id, data, actor): publish handover.completed on the service's own topic
Answer = Callable[[UnitOfWork, str, dict, "str | None"], None]


@dataclass(frozen=True)
class Handovers:
    service: str
    user_model: type
    team_model: type
    completed_model: type
    move: Move
    answer: Answer

    def handlers(self) -> dict:
        """The service's dispatch table for crm.directory.v1."""
        return directory_dispatch(self.apply_change, self.hand_over)

    def apply_change(self, uow: UnitOfWork, envelope: dict) -> None:
        """user.* and team.*: keep the replica current; after a deactivation, what a handed-over
        leaver gained while still active (a record of their own, one given to them) goes to the
        successor now."""
        apply_directory_event(uow, envelope, self.user_model, self.team_model)
        leaver = deactivated_user(envelope)
        if leaver is None:
            return
        successor = holder_now(uow, self.completed_model, self.user_model, leaver)
        if successor != leaver and (heir := self._user(uow, successor)) is not None:
            self.move(uow, leaver, successor, heir.team_id, envelope.get("actor"), None)

    def hand_over(self, uow: UnitOfWork, envelope: dict) -> dict:
        """Move the leaver's open records to the successor and remember it. A successor deactivated
        meanwhile gets nothing: the handover is answered as failed."""
        handover_id, from_user, to_user = handover_request(envelope)
        successor = self._user(uow, to_user)
        if successor is None:
            # Not Reject: the user.created event may still be on its way (another key, another
            # partition). Retried, and dead-lettered with this reason if it never comes.
            raise LookupError(f"handover to user {to_user}, who is not in the directory (yet)")
        actor = envelope.get("actor")
        lock_keys(uow, [owner_lock_key(from_user)])  # records being given to the leaver commit first, or wait
        if not successor.active:
            self.answer(uow, handover_id, handover_answer(
                handover_id, self.service, from_user, to_user, failure=f"the successor {to_user} is not active"), actor)
            return {"moved": 0}
        moved = self.move(uow, from_user, to_user, successor.team_id, actor, handover_id)
        remember_handover(uow.session, self.completed_model, handover_id, from_user, to_user)
        self.answer(uow, handover_id, handover_answer(handover_id, self.service, from_user, to_user, **moved), actor)
        return moved

    def _user(self, uow: UnitOfWork, user_id: str):
        with uow.session.no_autoflush:
            return uow.session.get(self.user_model, user_id)
