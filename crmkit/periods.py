"""Reporting periods as users write them (CONTRACT §4: `2026-11`, `2026-Q4`, `2026`), as half-open
UTC ranges [start, end)."""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from functools import cache
from zoneinfo import ZoneInfo

from marshmallow import RAISE, Schema, ValidationError, fields

_PERIOD = re.compile(r"(?P<year>[0-9]{4})(?:-(?:(?P<month>[0-9]{2})|Q(?P<quarter>[1-4])))?")


@dataclass(frozen=True)
class Period:
    label: str
    start: dt.datetime
    end: dt.datetime


@cache
def time_zone() -> ZoneInfo:
    """Where the company works (CRM_TIME_ZONE, Asia/Shanghai by default): a sale at 07:00 in Shanghai
    on the 1st belongs to that month, a visit at 23:30 to that day."""
    return ZoneInfo(os.environ.get("CRM_TIME_ZONE", "Asia/Shanghai"))


def local_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(time_zone()).date()


def day_bounds(first: dt.date, last: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the days first..last (inclusive) where the company works."""
    zone, last = time_zone(), last or first
    start = dt.datetime.combine(first, dt.time(), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone).astimezone(dt.UTC)
    return start, end


def _month_start(year: int, month: int) -> dt.datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.datetime(year, month, 1, tzinfo=dt.UTC)


def parse_period(text: str) -> Period:
    match = _PERIOD.fullmatch(text or "")
    if not match:
        raise ValueError("a period is YYYY, YYYY-MM or YYYY-Qn (e.g. 2026, 2026-11, 2026-Q4)")
    year = int(match["year"])
    if not 1900 <= year <= 2999:
        raise ValueError("year out of range")
    if match["month"]:
        month = int(match["month"])
        if not 1 <= month <= 12:
            raise ValueError("month must be 01 to 12")
        return Period(text, _month_start(year, month), _month_start(year, month + 1))
    if match["quarter"]:
        first = (int(match["quarter"]) - 1) * 3 + 1
        return Period(text, _month_start(year, first), _month_start(year, first + 3))
    return Period(text, _month_start(year, 1), _month_start(year + 1, 1))


def current_period(kind: str = "month", now: dt.datetime | None = None) -> Period:
    now = now or dt.datetime.now(dt.UTC)
    label = {"month": f"{now.year}-{now.month:02d}", "quarter": f"{now.year}-Q{(now.month - 1) // 3 + 1}",
             "year": str(now.year)}[kind]
    return parse_period(label)


PERIOD_PATTERN = r"^(19\d\d|2\d\d\d)(-(0[1-9]|1[0-2])|-Q[1-4])?$"  # what parse_period accepts, documented


class PeriodField(fields.String):
    """A query or body field holding a period; loads as a Period."""

    def __init__(self, **kwargs):
        metadata = {"pattern": PERIOD_PATTERN, "example": "2026-Q4", **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_period(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    def _serialize(self, value, attr, obj, **kwargs):
        return value.label if isinstance(value, Period) else value


class PeriodArgsSchema(Schema):
    """`?period=` of a report; the current month when left out."""

    class Meta:
        unknown = RAISE

    period = PeriodField(load_default=current_period,
                         metadata={"description": "YYYY, YYYY-MM or YYYY-Qn; the current month by default"})
