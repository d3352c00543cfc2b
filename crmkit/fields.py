"""marshmallow fields with the CRM's rules built in, so every service validates the same way.

- Text: bounded length, no NUL (PostgreSQL cannot store it; it would be a 500, not a 422).
- Money: a decimal string with 2 places, below Numeric(14, 2)'s ceiling, and left out of the
  response for roles that may not see money (CONTRACT §2) when rendered inside a request.
- Timestamp: timezone-aware, years 1900-2999 (extreme years overflow on conversion to UTC).
"""
from __future__ import annotations

import datetime as dt

from marshmallow import ValidationError, fields, missing, validate

MONEY_MAX = 10**12  # Numeric(14, 2) holds up to 999,999,999,999.99


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def _sane_year(value) -> None:
    if not 1900 <= value.year <= 2999:
        raise ValidationError("year must be between 1900 and 2999")


def Text(max_length: int, *, min_length: int | None = None, **kwargs) -> fields.String:  # noqa: N802 - a field factory
    return fields.String(validate=[validate.Length(min=min_length, max=max_length), _no_nul], **kwargs)


class _UTCDateTime(fields.AwareDateTime):
    """Any offset in, UTC out: the API answers in UTC (CONTRACT §3) even before a reload from the database."""

    def _deserialize(self, value, attr, data, **kwargs):
        parsed = super()._deserialize(value, attr, data, **kwargs)
        _sane_year(parsed)  # before converting: extreme years overflow in astimezone
        return parsed.astimezone(dt.UTC)


def Timestamp(**kwargs) -> fields.AwareDateTime:  # noqa: N802
    return _UTCDateTime(**kwargs)


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


class Money(fields.Decimal):
    def __init__(self, *, hidden_from: tuple[str, ...] = (), **kwargs):
        kwargs.setdefault("validate", _money_range)
        metadata = {"type": "string", "format": "decimal", "pattern": r"^\d{1,12}(\.\d{1,2})?$",
                    "example": "12500.00", **kwargs.pop("metadata", {})}
        super().__init__(as_string=True, places=2, metadata=metadata, **kwargs)
        self.hidden_from = frozenset(hidden_from)

    def serialize(self, attr, obj, accessor=None, **kwargs):
        if self.hidden_from and viewer_role() in self.hidden_from:
            return missing  # marshmallow leaves the key out
        return super().serialize(attr, obj, accessor, **kwargs)


PHONE = validate.Regexp(r"^[0-9+()\-\s.]{3,50}$", error="digits, spaces and + ( ) - . only")
CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="an ISO 4217 code such as CNY or USD")
