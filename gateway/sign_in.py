"""Failed sign-ins, counted per client address and user name in the gateway's own database.

The edge (HAProxy) limits requests per address, per user and to the sign-in route; what it cannot
see is the name being guessed, which is in the body. That count lives here, in the database every
gateway process and replica shares (it replaced the Redis-backed limiter). Only failures count: a
rep signing in again and again is never refused; someone guessing one user's password from one
address is, CRM_SIGN_IN_FAILURES times per CRM_SIGN_IN_WINDOW_SECONDS, whether the name exists or
not (the answer must not tell). Keyed by address and name, not by name alone, so a stranger cannot
lock a known user out by failing on purpose.
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from crmkit import metrics
from crmkit.auth import Unauthorized
from crmkit.db import UnitOfWork, utcnow
from crmkit.problems import Problem

from .db import SignInFailure


class TooManyFailures(Problem):
    status = 429


@dataclass(frozen=True)
class SignInPolicy:
    failures: int = 10
    window_seconds: int = 900

    @classmethod
    def from_env(cls) -> SignInPolicy:
        return cls(failures=int(os.environ.get("CRM_SIGN_IN_FAILURES", "10")),
                   window_seconds=int(os.environ.get("CRM_SIGN_IN_WINDOW_SECONDS", "900")))


def attempt_key(address: str, username: str) -> str:
    """A fixed-width key: the table never holds what strangers typed as a name."""
    return hashlib.sha256(f"{address}|{username.strip().lower()}".encode()).hexdigest()


def refuse_if_throttled(uow: UnitOfWork, policy: SignInPolicy, key: str, now: datetime | None = None) -> bool:
    """429 with Retry-After while this address has failed too often for this name in the window;
    otherwise whether there is a count at all (a success then clears it)."""
    now = now or utcnow()
    row = uow.session.get(SignInFailure, key)
    if row is None:
        return False
    ends = row.window_started_at + timedelta(seconds=policy.window_seconds)
    if row.failures < policy.failures or now >= ends:
        return True
    retry_after = max(1, math.ceil((ends - now).total_seconds()))
    metrics.RATE_LIMITED.labels("sign_in").inc()
    raise TooManyFailures(f"too many failed sign-ins for this name from this address; retry in {retry_after} s",
                          headers={"Retry-After": str(retry_after)})


def record_failure(uow: UnitOfWork, policy: SignInPolicy, key: str, now: datetime | None = None) -> None:
    """Count one failure, in one statement (two processes failing at once both count): a window
    that has ended starts again at one."""
    now = now or utcnow()
    expired = SignInFailure.window_started_at <= now - timedelta(seconds=policy.window_seconds)
    dialect = uow.session.get_bind().dialect.name
    insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(SignInFailure)
    # Ended windows are forgotten here (failures are rare; the index makes it a short range delete).
    uow.session.execute(delete(SignInFailure).where(
        SignInFailure.window_started_at <= now - timedelta(seconds=2 * policy.window_seconds)))
    uow.session.execute(insert.values(key=key, failures=1, window_started_at=now).on_conflict_do_update(
        index_elements=["key"],
        set_={"failures": case((expired, 1), else_=SignInFailure.failures + 1),
              "window_started_at": case((expired, now), else_=SignInFailure.window_started_at)}))


def forget_failures(uow: UnitOfWork, key: str) -> None:
    """A successful sign-in clears the count for its address and name."""
    uow.session.execute(delete(SignInFailure).where(SignInFailure.key == key))


def sign_in(db, policy: SignInPolicy, key: str, attempt: Callable[[UnitOfWork], dict]) -> dict:
    """Run `attempt` (check the password, issue a token) unless this address and name are throttled;
    count its failure, or clear the count on success. The count is written after the reading
    transaction ends (on SQLite a second connection writing inside it would wait for itself)."""
    with db.uow(readonly=True) as uow:
        earlier = refuse_if_throttled(uow, policy, key)
        try:
            answer = attempt(uow)
        except Unauthorized:
            answer = None
    if answer is None:
        with db.uow() as uow:
            record_failure(uow, policy, key)
            uow.commit()
        raise Unauthorized("wrong username or password")
    if earlier:
        with db.uow() as uow:
            forget_failures(uow, key)
            uow.commit()
    return answer
