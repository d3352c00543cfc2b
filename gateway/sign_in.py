"""Sign-in attempts, counted per client address and user name in the gateway's own database.

The edge (HAProxy) limits requests per address, per user and to the sign-in route; what it cannot
see is the name being guessed, which is in the body. That count lives here, in the database every
gateway process and replica shares (it replaced the Redis-backed limiter).

- An attempt is counted *before* its password is checked, in one statement, and refused once the
  count is over CRM_SIGN_IN_FAILURES within CRM_SIGN_IN_WINDOW_SECONDS. Counting after the check
  let a burst of concurrent guesses all pass the check while the count still read low.
- A success clears the count: a rep signing in again and again is never refused, only someone
  failing for one name from one address, whether the name exists or not (the answer must not tell).
- Keyed by address and name, not by name alone, so a stranger cannot lock a known user out by
  failing on purpose; an IPv6 address counts by its /64 (one subscriber's network), as at the edge.
- A password check (scrypt) takes ~32 MiB for a moment: at most CRM_SIGN_IN_CONCURRENCY run at once
  per process, so a burst of sign-ins cannot take the gateway's memory.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, delete

from crmkit import metrics
from crmkit.db import UnitOfWork, upsert, utcnow
from crmkit.problems import Problem

from .db import SignInFailure


class TooManyFailures(Problem):
    status = 429


@dataclass(frozen=True)
class SignInPolicy:
    failures: int = 10
    window_seconds: int = 900
    concurrency: int = 4  # password checks at once in one process
    checks: threading.BoundedSemaphore = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "checks", threading.BoundedSemaphore(self.concurrency))

    @classmethod
    def from_env(cls) -> SignInPolicy:
        return cls(failures=int(os.environ.get("CRM_SIGN_IN_FAILURES", "10")),
                   window_seconds=int(os.environ.get("CRM_SIGN_IN_WINDOW_SECONDS", "900")),
                   concurrency=int(os.environ.get("CRM_SIGN_IN_CONCURRENCY", "4")))


def attempt_key(address: str, username: str) -> str:
    """A fixed-width key (the table never holds what strangers typed as a name); an IPv6 address by
    its /64, which one subscriber can fill with addresses of their own."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None and ip.version == 6 and ip.ipv4_mapped is None:
        address = str(ipaddress.ip_network(f"{ip}/64", strict=False))
    elif ip is not None and ip.version == 6:
        address = str(ip.ipv4_mapped)
    return hashlib.sha256(f"{address}|{username.strip().lower()}".encode()).hexdigest()


def count_attempt(uow: UnitOfWork, policy: SignInPolicy, key: str, now: datetime | None = None) -> None:
    """Count this attempt, in one statement (concurrent attempts each get their own number); a window
    that has ended starts again at one. 429 with Retry-After when the count is over the limit."""
    now = now or utcnow()
    expired = SignInFailure.window_started_at <= now - timedelta(seconds=policy.window_seconds)
    insert = upsert(uow.session, SignInFailure)
    # Ended windows are forgotten here (the index makes it a short range delete).
    uow.session.execute(delete(SignInFailure).where(
        SignInFailure.window_started_at <= now - timedelta(seconds=2 * policy.window_seconds)))
    failures, started = uow.session.execute(
        insert.values(key=key, failures=1, window_started_at=now).on_conflict_do_update(
            index_elements=["key"],
            set_={"failures": case((expired, 1), else_=SignInFailure.failures + 1),
                  "window_started_at": case((expired, now), else_=SignInFailure.window_started_at)})
        .returning(SignInFailure.failures, SignInFailure.window_started_at)).one()
    if failures <= policy.failures:
        return
    ends = started + timedelta(seconds=policy.window_seconds)
    retry_after = max(1, math.ceil((ends - now).total_seconds()))
    metrics.RATE_LIMITED.labels("sign_in").inc()
    raise TooManyFailures(f"too many failed sign-ins for this name from this address; retry in {retry_after} s",
                          headers={"Retry-After": str(retry_after)})


def forget_failures(uow: UnitOfWork, key: str) -> None:
    """A successful sign-in clears the count for its address and name."""
    uow.session.execute(delete(SignInFailure).where(SignInFailure.key == key))


def sign_in(db, policy: SignInPolicy, key: str, attempt: Callable[[UnitOfWork], dict]) -> dict:
    """Count the attempt (refused over the limit), then run `attempt` (check the password, issue a
    token); a success clears the count. The count is committed before the password is checked,
    in a transaction of its own (on SQLite a second connection writing inside the reading one
    would wait for itself)."""
    with db.uow() as uow:
        count_attempt(uow, policy, key)
        uow.commit()
    if not policy.checks.acquire(timeout=2):
        raise Problem("too many sign-ins at once; retry in a second", status=503, headers={"Retry-After": "1"})
    try:
        with db.uow(readonly=True) as uow:
            answer = attempt(uow)  # Unauthorized for a wrong name or password: the count stands
    finally:
        policy.checks.release()
    with db.uow() as uow:
        forget_failures(uow, key)
        uow.commit()
    return answer
