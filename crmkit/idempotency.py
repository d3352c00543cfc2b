"""Idempotency-Key on creating POSTs: a replay returns the first response (CONTRACT §3).

States of a key (unique per caller):
  in_progress  claimed before the view runs, so two concurrent requests cannot both create;
  committed    set inside the view's own transaction (a commit hook), atomically with its effect;
  done         the response is stored and is what every replay returns.
So: a request that failed before committing releases its key; one whose process died before
committing leaves an in_progress claim that a retry may take over once it is stale (older than
any request can run); one that died after committing but before storing its response is never
applied again: a retry gets 409 and should read the resource instead. A request that arrives while
another with its key is running gets 409 with Retry-After, and its retry the first response.

Every bookkeeping transaction that writes takes the write lock up front (crmkit.db.WRITES: BEGIN
IMMEDIATE on SQLite). A deferred transaction that reads and then writes is refused at once by
SQLite ("database is locked") when another writer is active, which turned ordinary concurrency
into 503s for requests that had in fact been applied.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from functools import wraps

from flask import Response, g, make_response, request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .db import WRITES, run_with_commit_hook, utcnow
from .errors import Conflict
from .problems import Problem
from .web import ctx

log = logging.getLogger(__name__)
_KEPT_HEADERS = ("Content-Type", "Location", "ETag")
STALE_AFTER = dt.timedelta(minutes=5)  # far beyond gunicorn's request timeout
# How long after its claim a committed request may still be storing its response (milliseconds, as a
# rule; a slow request's claim is older, hence the margin).
STORING_GRACE = dt.timedelta(seconds=90)


def idempotent(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 200 or "\x00" in key:
            raise Problem("Idempotency-Key must be 1 to 200 characters", status=400)
        table = ctx().tables["idempotency_keys"]
        engine = ctx().db.engine.execution_options(**{WRITES: True})
        this = (table.c.principal == g.principal.user_id) & (table.c.key == key)
        fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + request.get_data()).hexdigest()

        replay = _claim(engine, table, this, g.principal.user_id, key, fingerprint)
        if replay is not None:
            return replay

        def mark_committed(session):
            session.execute(update(table).where(this).values(state="committed"))

        try:
            response = make_response(run_with_commit_hook(mark_committed, lambda: view(*args, **kwargs)))
        except BaseException:
            _release_if_uncommitted(engine, table, this)
            raise
        _store(engine, table, this, response)
        return response

    return wrapper


def _store(engine, table, this, response: Response, attempts: int = 3) -> None:
    """Keep the response for replays (or free the key if nothing was committed). The effect is
    committed by now, so a failure here must not turn the answer into an error: after a few tries
    the response is returned anyway, and a retry of the key is told to read the resource."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                state = conn.execute(select(table.c.state).where(this)).scalar_one_or_none()
                if state == "committed":
                    headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
                    conn.execute(update(table).where(this).values(
                        state="done", status_code=response.status_code, response_body=response.get_data(),
                        response_headers=json.dumps(headers)))
                elif state == "in_progress":  # nothing was committed (an error response): free the key
                    conn.execute(delete(table).where(this))
            return
        except SQLAlchemyError:
            if attempt == attempts - 1:
                log.warning("could not store the response of an idempotent request", exc_info=True)
                return
            time.sleep(0.05 * (attempt + 1))


def _claim(engine, table, this, who: str, key: str, fingerprint: str) -> Response | None:
    """Claim the key, or return the stored response of an earlier identical request."""
    try:
        with engine.begin() as conn:
            conn.execute(table.insert().values(principal=who, key=key, fingerprint=fingerprint,
                                               state="in_progress", created_at=utcnow()))
        return None
    except IntegrityError:
        pass
    with engine.begin() as conn:
        row = conn.execute(select(table).where(this)).one_or_none()
        if row is None:
            raise Conflict("a request with this Idempotency-Key just finished failing; retry it") from None
        if row.fingerprint != fingerprint:
            raise Problem("this Idempotency-Key was used for a different request", status=422) from None
        if row.state == "done":
            replay = Response(row.response_body, status=row.status_code)
            for k, v in json.loads(row.response_headers).items():
                replay.headers[k] = v
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        if row.state == "committed" and row.created_at > utcnow() - STORING_GRACE:
            # Applied a moment ago, its response still being stored: in progress, not lost.
            raise Conflict("a request with this Idempotency-Key is still in progress; retry it in a moment to get "
                           "its response", retry_after=1) from None
        if row.state == "committed":
            raise Conflict("the request with this Idempotency-Key was applied, but its response was lost; "
                           "read the resource instead of retrying") from None
        # in_progress: a live request still owns it, unless it died long ago without committing.
        taken_over = conn.execute(update(table).where(
            this, table.c.state == "in_progress", table.c.created_at < utcnow() - STALE_AFTER
        ).values(created_at=utcnow())).rowcount
        if not taken_over:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry it in a moment to get "
                           "its response", retry_after=1) from None
    return None


def _release_if_uncommitted(engine, table, this) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(delete(table).where(this, table.c.state == "in_progress"))
    except SQLAlchemyError:  # the request's own error is the answer; the claim goes stale in time
        log.warning("could not release an Idempotency-Key claim", exc_info=True)
