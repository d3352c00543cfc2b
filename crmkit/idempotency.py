"""Idempotency-Key on creating POSTs: a replay returns the first response (CONTRACT §3).

The key is claimed (unique per caller) before the view runs, so two concurrent requests with one
key cannot both create; the response is stored after. A request whose claim is still open gets
409; a key reused with a different body gets 422. Failed requests release their claim so the
client may retry them.
"""
from __future__ import annotations

import hashlib
import json
from functools import wraps

from flask import Response, g, make_response, request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from .db import utcnow
from .errors import Conflict, Problem
from .web import ctx

_KEPT_HEADERS = ("Content-Type", "Location", "ETag")


def idempotent(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 200:
            raise Problem("Idempotency-Key must be 1 to 200 characters", status=400)
        table = ctx().tables["idempotency_keys"]
        engine = ctx().db.engine
        who = g.principal.user_id
        fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + request.get_data()).hexdigest()
        try:
            with engine.begin() as conn:
                conn.execute(table.insert().values(principal=who, key=key, fingerprint=fingerprint,
                                                   state="in_progress", created_at=utcnow()))
        except IntegrityError:
            with engine.connect() as conn:
                row = conn.execute(select(table).where(table.c.principal == who, table.c.key == key)).one()
            if row.fingerprint != fingerprint:
                raise Problem("this Idempotency-Key was used for a different request", status=422) from None
            if row.state != "done":
                raise Conflict("a request with this Idempotency-Key is still in progress") from None
            replay = Response(row.response_body, status=row.status_code)
            for k, v in json.loads(row.response_headers).items():
                replay.headers[k] = v
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            with engine.begin() as conn:
                conn.execute(delete(table).where(table.c.principal == who, table.c.key == key))
            raise
        with engine.begin() as conn:
            if response.status_code < 300:
                headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
                conn.execute(update(table).where(table.c.principal == who, table.c.key == key).values(
                    state="done", status_code=response.status_code, response_body=response.get_data(),
                    response_headers=json.dumps(headers)))
            else:
                conn.execute(delete(table).where(table.c.principal == who, table.c.key == key))
        return response

    return wrapper
