"""Performance rules without I/O: the months a period covers, a target spread over them by its
distribution, attainment, and the weighted KPI score (issue 16)."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from crmkit.periods import local_day, parse_period, time_zone  # noqa: F401 - the deployment's day, here as before

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


def target_in(targets: list, period: str) -> Decimal | None:
    """The target for `period` among one subject's targets on one metric and narrowing (objects with
    `period`, `value`, `distribution`): one set for it exactly; else the share of the narrowest one
    containing it (a quarter's before the year's); else the sum of those inside it, quarters first,
    then months no quarter covers. None when none applies."""
    wanted = months_of(period)
    for t in targets:
        if t.period == period:
            return t.value
    for t in sorted(targets, key=lambda t: len(months_of(t.period))):
        shares = check_distribution(t.period, {m: Decimal(v) for m, v in (t.distribution or {}).items()} or None)
        share = target_for(t.value, t.period, shares, period)
        if share is not None:
            return share
    covered: set[str] = set()
    total, found = Decimal("0.00"), False
    for t in sorted(targets, key=lambda t: (-len(months_of(t.period)), t.period)):
        months = set(months_of(t.period))
        if not months <= set(wanted) or months & covered:
            continue
        covered |= months
        total, found = total + t.value, True
    return total if found else None


# ---- commission ------------------------------------------------------------------------------------------
CENT = Decimal("0.01")


def commission_parts(before: Decimal, amount: Decimal, target: Decimal | None, tiers: list[dict],
                     accelerator: dict | None) -> list[dict]:
    """The commission on `amount` of the basis, earned when `before` had been earned already in the
    period: split where cumulative attainment crosses a tier's `from_pct`, each part at its tier's
    rate, times the accelerator's multiplier above its `above_pct`. Without a target (or a zero one)
    the whole is at the first tier's rate. Each part is rounded to the cent."""
    tiers = sorted(tiers, key=lambda t: Decimal(t["from_pct"]))
    if target is None or target <= 0:
        rate = Decimal(tiers[0]["rate_pct"])
        return [{"amount": amount, "rate_pct": rate, "commission": (amount * rate / HUNDRED).quantize(CENT, ROUND_HALF_UP)}]
    # Breakpoints in money: each tier's start and the accelerator's threshold.
    marks = {Decimal(t["from_pct"]) * target / HUNDRED for t in tiers[1:]}
    if accelerator:
        marks.add(Decimal(accelerator["above_pct"]) * target / HUNDRED)
    start, end, parts = before, before + amount, []
    cuts = sorted(m for m in marks if start < m < end)
    for low, high in zip([start, *cuts], [*cuts, end], strict=True):
        if high == low and amount != 0:
            continue
        pct = low * HUNDRED / target  # attainment where this part starts
        rate = Decimal(next(t["rate_pct"] for t in reversed(tiers) if Decimal(t["from_pct"]) <= pct))
        if accelerator and pct >= Decimal(accelerator["above_pct"]):
            rate = rate * Decimal(accelerator["multiplier"])
        part = high - low
        parts.append({"amount": part, "rate_pct": rate.normalize(),
                      "commission": (part * rate / HUNDRED).quantize(CENT, ROUND_HALF_UP)})
    return parts


def day_of_period(day, period: str) -> int:
    """1 on the period's first day: the 20th of November is day 20 of 2026-11 and day 51 of 2026-Q4."""
    return (day - parse_period(period).start.date()).days + 1


def periods_of_month(month: str) -> dict[str, str]:
    """`2026-11` → the month, quarter and year it is in: {"month": "2026-11", "quarter": "2026-Q4", "year": "2026"}."""
    year, m = month[:4], int(month[5:])
    return {"month": month, "quarter": f"{year}-Q{(m - 1) // 3 + 1}", "year": year}


def period_of(day, kind: str) -> str:
    return periods_of_month(f"{day.year}-{day.month:02d}")[kind]
