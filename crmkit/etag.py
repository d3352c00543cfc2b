"""ETag / If-Match optimistic concurrency (CONTRACT §3): PATCH without If-Match is 428, stale is 412."""
from __future__ import annotations

from flask import request

from .errors import StaleVersion, VersionRequired

# The If-Match header as the OpenAPI document describes it on routes that require it:
# `@blp.doc(parameters=[IF_MATCH])`.
IF_MATCH = {"in": "header", "name": "If-Match", "required": True, "schema": {"type": "string", "example": '"v3"'},
            "description": "the ETag of the version you last read (428 without it, 412 when it is not current)"}


# Where If-Match is optional but honoured (actions: stage moves, win, lose).
IF_MATCH_OPTIONAL = {**IF_MATCH, "required": False,
                     "description": "if sent, the ETag of the version you last read (412 when it is not current)"}


def etag_for(version: int) -> str:
    return f'"v{version}"'


def tagged(record) -> dict:
    """The ETag of a record's version, for the answer's headers."""
    return {"ETag": etag_for(record.version)}


def require_if_match(current_version: int) -> None:
    header = request.headers.get("If-Match")
    if not header:
        raise VersionRequired("send If-Match with the ETag you last read")
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    if "*" not in tags and etag_for(current_version) not in tags:
        raise StaleVersion("the record changed since you read it; read it again and retry")



def check_if_match_if_given(current_version: int) -> None:
    """For actions (POST .../stage, /win): If-Match is optional there, but honoured when sent."""
    if request.headers.get("If-Match"):
        require_if_match(current_version)
