"""Collision detection (两个销售撞单): does another rep's open opportunity look like the same deal?

Pure functions, no I/O. Candidates come from the database by shared name grams (db.MatchKey), so a
write never scans every open opportunity; this module scores each candidate and explains the score.

A collision needs the customer to look the same: two reps selling the same products in one region
to *different* customers is ordinary business, so name similarity is a gate, and the other signals
(region, products, amount, close date) then decide whether it is the same deal.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal

# Legal-form and filler words that say nothing about who the customer is.
LATIN_SUFFIXES = frozenset({
    "co", "company", "companies", "ltd", "limited", "inc", "incorporated", "corp", "corporation", "llc",
    "plc", "gmbh", "ag", "sa", "bv", "nv", "pte", "pty", "group", "holding", "holdings", "the", "and", "of",
})
CJK_SUFFIXES = ("股份有限公司", "有限责任公司", "有限公司", "分公司", "总公司", "公司", "集团", "股份")
# Where a company sits is not who it is: "上海华信" and "华信(上海)" are the same customer.
PLACES = ("北京", "上海", "天津", "重庆", "广州", "深圳", "杭州", "南京", "苏州", "武汉", "成都", "西安", "青岛",
          "厦门", "宁波", "无锡", "长沙", "郑州", "合肥", "济南", "沈阳", "大连", "福州", "昆明", "香港", "江苏",
          "浙江", "广东", "山东", "河南", "河北", "湖北", "湖南", "四川", "福建", "安徽", "辽宁", "中国")
LATIN_PLACES = frozenset({
    "beijing", "shanghai", "tianjin", "chongqing", "guangzhou", "shenzhen", "hangzhou", "nanjing", "suzhou",
    "wuhan", "chengdu", "xian", "qingdao", "xiamen", "ningbo", "hongkong", "china",
})
_PARENTHESES = re.compile(r"\([^)]*\)")
_CJK = re.compile(r"[\u3400-\u9fff]+")

# Weights of the signals (they add up to 1) and the two thresholds.
WEIGHTS = {"name": 0.45, "region": 0.15, "products": 0.20, "amount": 0.10, "close_date": 0.10}
NAME_GATE = 0.40   # below this the customers are different, whatever else matches
THRESHOLD = 0.65   # a score at or above this marks both opportunities
DATE_WINDOW_DAYS = 90


def normalize_name(name: str | None) -> str:
    """Lower-case, half-width, without legal forms, places and punctuation: 'Acme Systems Co., Ltd.'
    → 'acmesystem', '华信系统集成(上海)有限公司' → '华信系统集成'."""
    text = unicodedata.normalize("NFKC", name or "").lower()
    text = _PARENTHESES.sub(" ", text)
    words = []
    for token in re.findall(r"[a-z0-9]+|[\u3400-\u9fff]+", text):
        if _CJK.fullmatch(token):
            words.append(_strip_cjk(token))  # empty for a bare legal form such as '有限公司'
        elif token not in LATIN_SUFFIXES and token not in LATIN_PLACES:
            words.append(token[:-1] if len(token) > 3 and token.endswith("s") else token)
    return "".join(words) or text.strip()


def _strip_cjk(token: str) -> str:
    changed = True
    while changed and token:
        changed = False
        for suffix in CJK_SUFFIXES:
            if token.endswith(suffix):
                token, changed = token[: -len(suffix)], True
        for place in PLACES:
            for form in (place + "市", place + "省", place):
                if token.startswith(form) and len(token) > len(form) + 1:
                    token, changed = token[len(form):], True
                    break
    return token


def name_grams(normalized: str) -> set[str]:
    """Character bigrams: they work alike for Chinese (no spaces) and for Latin names."""
    if len(normalized) < 2:
        return {normalized} if normalized else set()
    return {normalized[i:i + 2] for i in range(len(normalized) - 1)}


def name_similarity(a: str, b: str) -> float:
    """Dice coefficient of the two normalized names' bigrams (1.0 for the same name)."""
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    ga, gb = name_grams(a), name_grams(b)
    return 2 * len(ga & gb) / (len(ga) + len(gb))


@dataclass(frozen=True)
class Deal:
    """What the detector compares of an opportunity."""

    account_name: str
    region: str | None
    skus: frozenset[str]
    amount: Decimal | None
    close_date: dt.date | None
    normalized: str = field(default="", compare=False)

    @classmethod
    def of(cls, account_name, region, products, amount, close_date) -> Deal:
        return cls(account_name or "", (region or "").strip().lower() or None,
                   frozenset(p["sku"] for p in products or () if p.get("sku")), amount, close_date,
                   normalize_name(account_name))


@dataclass(frozen=True)
class Match:
    score: float
    signals: dict[str, float]
    reasons: list[str]

    @property
    def is_collision(self) -> bool:
        return self.signals["name"] >= NAME_GATE and self.score >= THRESHOLD


def compare(new: Deal, other: Deal) -> Match:
    signals = {
        "name": name_similarity(new.normalized, other.normalized),
        "region": 1.0 if new.region and new.region == other.region else 0.0,
        "products": (len(new.skus & other.skus) / len(new.skus | other.skus)) if new.skus and other.skus else 0.0,
        "amount": _closeness(new.amount, other.amount),
        "close_date": _date_closeness(new.close_date, other.close_date),
    }
    score = round(sum(WEIGHTS[k] * v for k, v in signals.items()), 3)
    reasons = []
    if signals["name"] >= NAME_GATE:
        reasons.append(f"account names are {signals['name']:.0%} alike once legal forms and places are ignored")
    if signals["region"]:
        reasons.append("same region")
    if signals["products"]:
        shared = sorted(new.skus & other.skus)
        reasons.append(f"{len(shared)} of {len(new.skus | other.skus)} products in common ({', '.join(shared[:5])})")
    if signals["amount"] >= 0.8:
        reasons.append(f"amounts within {1 - signals['amount']:.0%} of each other")
    if signals["close_date"] >= 0.5:
        days = abs((new.close_date - other.close_date).days)
        reasons.append(f"expected to close {days} days apart")
    return Match(score, {k: round(v, 3) for k, v in signals.items()}, reasons)


def _closeness(a: Decimal | None, b: Decimal | None) -> float:
    if a is None or b is None or max(a, b) <= 0:
        return 0.0
    return float(1 - abs(a - b) / max(a, b))


def _date_closeness(a: dt.date | None, b: dt.date | None) -> float:
    if a is None or b is None:
        return 0.0
    return max(0.0, 1 - abs((a - b).days) / DATE_WINDOW_DAYS)
