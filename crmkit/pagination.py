"""Keyset (cursor) pagination: page 5,000 costs what page 1 costs.

The cursor is an opaque token holding the sort key and id of the last row of the page; the next
page is `WHERE (sort_col, id) < (:v, :id)` on an index of (sort_col, id).
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from dataclasses import dataclass

from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import Select, tuple_

from .fields import Text
from .problems import Problem

DEFAULT_LIMIT, MAX_LIMIT = 50, 200


class BadQuery(Problem):
    status = 400


@dataclass(frozen=True)
class SortSpec:
    field: str
    descending: bool


def sort_field(allowed: set[str], default: str = "-created_at"):
    """`?sort=` documented as what parse_sort takes: a sortable field, newest/largest first with -."""
    from marshmallow import fields

    choices = [f"{sign}{name}" for name in sorted(allowed) for sign in ("", "-")]
    return fields.String(load_default=default, metadata={"enum": choices, "description": "the order of the list"})


def parse_sort(raw: str | None, allowed: set[str], default: str) -> SortSpec:
    raw = default if raw is None else raw  # an empty ?sort= is refused like any other unknown order
    name = raw[1:] if raw.startswith("-") else raw
    if name not in allowed:
        raise BadQuery(f"cannot sort by {name!r}", errors={"sort": [f"one of {sorted(allowed)}, optionally prefixed by -"]})
    return SortSpec(name, raw.startswith("-"))


def _encode_value(v):
    if isinstance(v, dt.datetime):
        return {"t": "dt", "v": v.isoformat()}
    if isinstance(v, decimal.Decimal):
        return {"t": "dec", "v": str(v)}
    if isinstance(v, uuid.UUID):
        return {"t": "uuid", "v": str(v)}
    return {"t": "raw", "v": v}


def _decode_value(d):
    kind, v = d["t"], d["v"]
    return {"dt": dt.datetime.fromisoformat, "dec": decimal.Decimal, "uuid": uuid.UUID}.get(kind, lambda x: x)(v)


def encode_cursor(sort: SortSpec, value, row_id) -> str:
    doc = {"s": ("-" if sort.descending else "") + sort.field, "v": _encode_value(value), "id": _encode_value(row_id)}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def _of_type(value, expected: type) -> bool:
    """Of the column's type, and a value the database can take: a crafted cursor must not reach
    the database with a year-1 timestamp, a NaN, a 200,000-digit number or a NUL character."""
    if isinstance(value, dt.datetime):
        return (expected is dt.datetime and value.tzinfo is not None and 1900 <= value.year <= 2999
                and 1900 <= value.astimezone(dt.UTC).year <= 2999)
    if isinstance(value, decimal.Decimal):
        return expected is decimal.Decimal and value.is_finite() and abs(value) < 10**15
    if isinstance(value, str):
        return expected is str and len(value) <= 1000 and "\x00" not in value
    if isinstance(value, int) and not isinstance(value, bool):
        return expected is int and abs(value) < 2**63
    return isinstance(value, expected) and not isinstance(value, bool)


def decode_cursor(cursor: str, sort: SortSpec, value_type: type, id_type: type):
    """The cursor is the client's to tamper with, so its values are checked against the columns'
    types: a crafted one gets a 400, never a database error."""
    try:
        doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, row_id = _decode_value(doc["v"]), _decode_value(doc["id"])
        same_sort = doc["s"] == ("-" if sort.descending else "") + sort.field
        well_typed = _of_type(value, value_type) and _of_type(row_id, id_type)
    except Exception:  # noqa: BLE001 - any garbage is the client's
        well_typed = same_sort = False
    if not well_typed:
        raise BadQuery("invalid cursor", errors={"cursor": ["not a cursor this API issued"]})
    if not same_sort:
        raise BadQuery("cursor was issued for another sort order", errors={"cursor": ["sort changed"]})
    return value, row_id


def paginate(session, stmt: Select, *, model, sort: SortSpec, limit: int, cursor: str | None):
    """Run `stmt` (already filtered) as one page; returns (rows, next_cursor)."""
    column, id_column = getattr(model, sort.field), model.id
    if cursor:
        value, row_id = decode_cursor(cursor, sort, column.type.python_type, id_column.type.python_type)
        key = tuple_(column, id_column)
        stmt = stmt.where(key < tuple_(value, row_id) if sort.descending else key > tuple_(value, row_id))
    order = (column.desc(), id_column.desc()) if sort.descending else (column.asc(), id_column.asc())
    rows = session.execute(stmt.order_by(*order).limit(limit + 1)).scalars().all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(sort, getattr(last, sort.field), last.id)
    return rows, next_cursor


def page_schema(item_schema, name: str) -> type[Schema]:
    """The documented shape of a list (CONTRACT §3): `{"items": [...], "next_cursor": ...}`."""
    return type(name, (Schema,), {"items": fields.List(fields.Nested(item_schema)),
                                  "next_cursor": fields.String(allow_none=True)})


class PageArgsSchema(Schema):
    """`?limit=&cursor=` of every list (CONTRACT §3); list schemas with filters extend it."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Text(1000)
