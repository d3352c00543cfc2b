"""marshmallow fields with the CRM's rules built in, so every service validates the same way.

- Text: bounded length, no NUL (PostgreSQL cannot store it; it would be a 500, not a 422).
- Money: a decimal string with 2 places, below Numeric(14, 2)'s ceiling, and left out of the
  response for roles that may not see money (CONTRACT §2) when rendered inside a request.
- Timestamp: timezone-aware, years 1900-2999 (extreme years overflow on conversion to UTC).
"""
from __future__ import annotations

import datetime as dt
import re

from marshmallow import ValidationError, fields, missing, validate

MONEY_MAX = 10**12  # Numeric(14, 2) holds up to 999,999,999,999.99


NO_NUL_PATTERN = "^[^\\u0000]*$"  # JSON Schema (ECMA-262) for "no NUL character"


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def _sane_year(value) -> None:
    if not 1900 <= value.year <= 2999:
        raise ValidationError("year must be between 1900 and 2999")


def Text(max_length: int, *, min_length: int | None = None, **kwargs) -> fields.String:  # noqa: N802 - a field factory
    metadata = {"pattern": NO_NUL_PATTERN, **kwargs.pop("metadata", {})}  # documented as it is checked
    return fields.String(validate=[validate.Length(min=min_length, max=max_length), _no_nul], metadata=metadata,
                         **kwargs)


class _UTCDateTime(fields.AwareDateTime):
    """Any offset in, UTC out: the API answers in UTC (CONTRACT §3) even before a reload from the database."""

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        _sane_year(parsed)  # before converting: extreme years overflow in astimezone
        utc = parsed.astimezone(dt.UTC)
        _sane_year(utc)  # and after: 1900-01-01T00:30+01:00 is 1899 in UTC, which the API could not take back
        return utc


# The documented form of what _UTCDateTime accepts: ISO 8601 with an offset, years 1900-2999.
TIMESTAMP_PATTERN = r"^(19\d\d|2\d\d\d)-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$"


def Timestamp(**kwargs) -> fields.AwareDateTime:  # noqa: N802
    metadata = {"pattern": TIMESTAMP_PATTERN, **kwargs.pop("metadata", {})}
    return _UTCDateTime(metadata=metadata, **kwargs)


def Day(**kwargs) -> fields.Date:  # noqa: N802
    """A calendar day, years 1900-2999 (as documented by its pattern)."""
    metadata = {"pattern": r"^(19\d\d|2\d\d\d)-\d\d-\d\d$", **kwargs.pop("metadata", {})}
    return fields.Date(validate=_sane_year, metadata=metadata, **kwargs)


class WholeNumber(fields.Integer):
    """An integer as JSON Schema means it: 3 and 3.0 both are (the document says `integer`, and a
    client's JSON library may write either); 3.5, "3" and true are not."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            value = int(value)
        return super()._validated(value)


def viewer_role() -> str | None:
    """The calling principal's role while rendering an HTTP response; None elsewhere (events)."""
    from flask import g, has_request_context

    if has_request_context() and "principal" in g:
        return g.principal.role
    return None


def _money_range(value) -> None:
    # Not validate.Range: apispec would publish its bounds as decimal strings ("1000000000000.00"),
    # which is not valid OpenAPI for a `maximum`. The documented pattern below says the same.
    if not 0 <= value < MONEY_MAX:
        raise ValidationError(f"must be at least 0 and below {MONEY_MAX}")


class Flag(fields.Boolean):
    """true or false, and nothing else (marshmallow's Boolean also takes 1, "yes", "on", ...): what
    the document says (`boolean`) is what the API accepts."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class QueryFlag(fields.Boolean):
    """A boolean in a query string: exactly `true` or `false` (what the document says, and nothing
    marshmallow would also take, such as `1` or `yes`)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value not in ("true", "false"):
            raise self.make_error("invalid")
        return value == "true"


_MONEY_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")  # ASCII digits: the documented pattern, exactly


class Money(fields.Decimal):
    """Money as a decimal string ("12500.00"), as documented: a JSON number is refused (binary
    floating point cannot hold most amounts exactly). `strings_only=False` for outside producers'
    events, which may send numbers."""

    def __init__(self, *, hidden_from: tuple[str, ...] = (), strings_only: bool = True, **kwargs):
        kwargs.setdefault("validate", _money_range)
        metadata = {"type": "string", "format": "decimal", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,2})?$",
                    "example": "12500.00", **kwargs.pop("metadata", {})}
        if not strings_only:
            metadata = {**metadata, "type": ["string", "number"], "description": (
                "a decimal string such as \"12500.00\"; a JSON number is taken too, rounded to cents")}
        super().__init__(as_string=True, places=2, metadata=metadata, **kwargs)
        self.hidden_from = frozenset(hidden_from)
        self.strings_only = strings_only

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            # Exactly the documented form: no exponent, sign, spaces, underscores, other scripts'
            # digits, or a third decimal silently rounded away.
            if not _MONEY_TEXT.fullmatch(value):
                raise ValidationError('a decimal string such as "12500.00": digits, at most 2 decimals')
        elif self.strings_only or isinstance(value, bool):
            raise ValidationError('a decimal string such as "12500.00"')
        return super()._deserialize(value, attr, data, **kwargs)

    def serialize(self, attr, obj, accessor=None, **kwargs):
        if self.hidden_from and viewer_role() in self.hidden_from:
            return missing  # marshmallow leaves the key out
        return super().serialize(attr, obj, accessor, **kwargs)


PHONE = validate.Regexp(r"^[0-9+()\-\s.]{3,50}$", error="digits, spaces and + ( ) - . only")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="an ISO 4217 code such as CNY or USD")
