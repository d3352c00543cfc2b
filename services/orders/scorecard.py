"""Performance rules without I/O: the months a period covers, a target spread over them by its
distribution, attainment, and the weighted KPI score (issue 16)."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from crmkit.periods import parse_period

METRICS = ("revenue", "gross_margin", "new_accounts", "collections", "orders", "activities")
MONEY_METRICS = frozenset({"revenue", "gross_margin", "collections"})
HUNDRED = Decimal(100)


def months_of(period: str) -> list[str]:
    """`2026-Q4` → ['2026-10', '2026-11', '2026-12']; `2026-11` → ['2026-11']; `2026` → its twelve."""
    p = parse_period(period)
    out, year, month = [], p.start.year, p.start.month
    while (year, month) < (p.end.year, p.end.month):
        out.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def check_distribution(period: str, distribution: dict[str, Decimal] | None) -> dict[str, Fraction]:
    """The share of the target per month of the period, in percent: as given (every month named is in
    the period, and they total 100), or even (exact thirds, not 33.33s that lose a cent). Raises
    ValueError with what is wrong."""
    months = months_of(period)
    if not distribution:
        return dict.fromkeys(months, Fraction(100, len(months)))
    if len(months) == 1:
        raise ValueError("a monthly target has no distribution")
    outside = sorted(set(distribution) - set(months))
    if outside:
        raise ValueError(f"months outside {period}: {', '.join(outside)}")
    if any(v < 0 for v in distribution.values()):
        raise ValueError("shares are not negative")
    total = sum(distribution.values(), Decimal(0))
    if total != HUNDRED:
        raise ValueError(f"the shares total {total}, not 100")
    return {m: Fraction(distribution.get(m, Decimal(0))) for m in months}


def target_for(value: Decimal, target_period: str, shares: dict[str, Fraction], period: str) -> Decimal | None:
    """The part of a target (set for `target_period`) that falls in `period`: the whole when the
    periods are the same, the months' shares when `period` lies inside it; None when they do not nest."""
    wanted = months_of(period)
    if not set(wanted) <= set(shares):
        return None
    if wanted == months_of(target_period):
        return value
    share = sum((shares[m] for m in wanted), Fraction(0))
    return (value * share.numerator / (share.denominator * HUNDRED)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def attainment(actual: Decimal, target: Decimal | None) -> Decimal | None:
    """Actual over target in percent (one decimal); None without a target, or with a zero one."""
    if target is None or target <= 0:
        return None
    return (actual * HUNDRED / target).quantize(Decimal("0.1"), ROUND_HALF_UP)


def weighted_score(scheme: list[dict], attainments: dict[str, Decimal | None]) -> Decimal:
    """The sum of weight x min(attainment, cap) / 100 over the scheme's metrics; a metric without a target
    scores 0 (the scheme asked for it)."""
    score = Decimal(0)
    for item in scheme:
        value = attainments.get(item["metric"])
        if value is None:
            continue
        capped = min(value, Decimal(str(item.get("cap_pct", 100))))
        score += Decimal(item["weight"]) * capped / HUNDRED
    return score.quantize(Decimal("0.1"), ROUND_HALF_UP)
