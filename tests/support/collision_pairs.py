"""A generated, labelled set of opportunity pairs for measuring collision detection. Same deal:
one customer written two ways by two reps, or one project reached through two differently named
system integrators (same region, same products, same weeks). Not the same deal: the same
products in the same region months apart, the same region and weeks with other products, the
same products and weeks in another region, one popular product in common in the same region and
weeks, look-alike names, and a customer's later, unrelated deal.

Deterministic for a seed, so precision and recall are reproducible numbers."""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal

from services.opportunities.collisions import Deal

CN_BRANDS = ["华信", "智联", "东方", "新达", "汇通", "联创", "博远", "中科", "天成", "恒泰", "金桥", "远景", "卓越",
             "华星", "华鑫", "宏图", "正元", "海纳", "瑞丰", "鼎盛", "安信", "国泰", "万达", "永诚", "同方", "神州",
             "长城", "浪潮", "华东智联", "南天", "启明", "数码港"]
CN_TRADES = ["系统集成", "信息技术", "网络科技", "软件", "电子", "数据服务", "智能科技", "通信工程"]
CN_TRADE_VARIANTS = {"系统集成": ["信息系统集成", "系统集成服务", "系统工程"], "信息技术": ["信息科技", "信息技术服务"],
                     "网络科技": ["网络技术", "网络"], "软件": ["软件技术", "软件开发"], "电子": ["电子科技", "电子技术"],
                     "数据服务": ["数据", "数据技术"], "智能科技": ["智能技术", "智能"], "通信工程": ["通信", "通信技术"]}
CN_FORMS = ["有限公司", "股份有限公司", "有限责任公司", "公司", "集团有限公司"]
CN_PLACES = ["上海", "北京", "深圳", "杭州", "南京", "广州", "成都"]
EN_BRANDS = ["Acme", "Apex", "Orion", "Nimbus", "Vertex", "Zenith", "Sinotech", "Greatwall", "Bluesky", "Redstone",
             "Goldbridge", "Everbright", "Pioneer", "Summit", "Horizon", "Keystone", "Lighthouse", "Northstar"]
EN_TRADES = [("Systems Integration", "System Integrators"), ("Information Technology", "IT Services"),
             ("Networks", "Network"), ("Software", "Software Solutions"), ("Data Services", "Data")]
EN_FORMS = ["Co., Ltd.", "Ltd", "Limited", "Inc.", "Corp.", "Company Limited", "Group"]
REGIONS = ["East", "North", "South", "West", "Central"]
SKUS = [f"SKU-{i:03d}" for i in range(40)]


@dataclass(frozen=True)
class Pair:
    a: Deal
    b: Deal
    same_deal: bool
    kind: str


def _cn_name(rng, brand, trade, *, variant=False) -> str:
    if variant and rng.random() < 0.6:
        trade = rng.choice(CN_TRADE_VARIANTS[trade])
    form = rng.choice(CN_FORMS)
    place = rng.choice(CN_PLACES)
    style = rng.random()
    if style < 0.3:
        return f"{place}{brand}{trade}{form}"
    if style < 0.5:
        return f"{brand}{trade}({place}){form}"
    return f"{brand}{trade}{form}"


def _en_name(rng, brand, trade_pair, *, variant=False) -> str:
    trade = trade_pair[1] if variant and rng.random() < 0.6 else trade_pair[0]
    name = f"{brand} {trade} {rng.choice(EN_FORMS)}"
    if rng.random() < 0.3:
        name = name.upper()
    if rng.random() < 0.2:
        name = f"{name} (Shanghai)"
    return name


def _deal(name, region, skus, amount, close) -> Deal:
    return Deal.of(name, region, [{"sku": s} for s in skus], Decimal(amount), close)


def _products(rng, k=None) -> list[str]:
    return rng.sample(SKUS, k or rng.randint(1, 4))


def _near(rng, skus) -> list[str]:
    """The same quote, give or take one line."""
    out = list(skus)
    if len(out) > 1 and rng.random() < 0.3:
        out.pop()
    if rng.random() < 0.2:
        out.append(rng.choice(SKUS))
    return sorted(set(out))


def _other_products(rng, skus) -> list[str]:
    return rng.sample([s for s in SKUS if s not in skus], rng.randint(1, 4))


def generate(n: int = 1000, seed: int = 7) -> list[Pair]:
    """Half the pairs are one deal chased twice, half are not (see the kinds below)."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    base_day = dt.date(2026, 12, 1)
    while len(pairs) < n:
        chinese = rng.random() < 0.6
        region = rng.choice(REGIONS)
        skus = _products(rng)
        amount = rng.randint(20_000, 2_000_000)
        close = base_day + dt.timedelta(days=rng.randint(0, 120))
        brands = CN_BRANDS if chinese else EN_BRANDS
        if chinese:
            brand, trade = rng.choice(CN_BRANDS), rng.choice(CN_TRADES)
            name_a = _cn_name(rng, brand, trade)
        else:
            brand, trade = rng.choice(EN_BRANDS), rng.choice(EN_TRADES)
            name_a = _en_name(rng, brand, trade)

        def named(b, *, variant=False, trade=trade, chinese=chinese):
            return _cn_name(rng, b, trade, variant=variant) if chinese else _en_name(rng, b, trade, variant=variant)

        other = rng.choice([x for x in brands if x != brand])
        a = _deal(name_a, region, skus, amount, close)
        kind = rng.random()
        if kind < 0.30:  # one customer, written two ways by two reps, one deal
            b = _deal(named(brand, variant=True), region if rng.random() < 0.9 else rng.choice(REGIONS),
                      _near(rng, skus), int(amount * rng.uniform(0.85, 1.15)),
                      close + dt.timedelta(days=rng.randint(-30, 30)))
            pairs.append(Pair(a, b, True, "same customer, same deal"))
        elif kind < 0.50:  # one project, reached through two differently named system integrators (the seeds' case)
            b = _deal(named(other), region, _near(rng, skus), int(amount * rng.uniform(0.9, 1.1)),
                      close + dt.timedelta(days=rng.randint(-14, 14)))
            pairs.append(Pair(a, b, True, "same project, another partner"))
        elif kind < 0.62:  # the same products in the same region, months apart: another customer's deal
            b = _deal(named(other), region, skus, int(amount * rng.uniform(0.8, 1.2)),
                      close + dt.timedelta(days=rng.choice((-1, 1)) * rng.randint(90, 300)))
            pairs.append(Pair(a, b, False, "same products and region, another time"))
        elif kind < 0.74:  # same region and weeks, other products
            b = _deal(named(other), region, _other_products(rng, skus), int(amount * rng.uniform(0.8, 1.2)),
                      close + dt.timedelta(days=rng.randint(-20, 20)))
            pairs.append(Pair(a, b, False, "same region and time, other products"))
        elif kind < 0.80:  # same region and weeks, one popular product in common, otherwise another quote
            one = rng.choice(skus)
            b = _deal(named(other), region, sorted({one, *_other_products(rng, skus)[:rng.randint(0, 2)]}),
                      rng.randint(20_000, 2_000_000), close + dt.timedelta(days=rng.randint(-30, 30)))
            pairs.append(Pair(a, b, False, "same region and weeks, one product in common"))
        elif kind < 0.86:  # same products and weeks, another region
            b = _deal(named(other), rng.choice([r for r in REGIONS if r != region]), _near(rng, skus),
                      int(amount * rng.uniform(0.8, 1.2)), close + dt.timedelta(days=rng.randint(-20, 20)))
            pairs.append(Pair(a, b, False, "same products and time, another region"))
        elif kind < 0.93:  # a look-alike name, nothing else in common
            alike = [x for x in brands if x != brand and (x[0] == brand[0] or x[-1] == brand[-1])] or [other]
            b = _deal(named(rng.choice(alike)), rng.choice(REGIONS), _other_products(rng, skus),
                      rng.randint(20_000, 2_000_000), base_day + dt.timedelta(days=rng.randint(0, 360)))
            pairs.append(Pair(a, b, False, "look-alike name"))
        else:  # the same customer again, a different deal much later
            b = _deal(named(brand), region, _other_products(rng, skus), rng.randint(20_000, 2_000_000),
                      close + dt.timedelta(days=rng.randint(150, 400)))
            pairs.append(Pair(a, b, False, "same customer, unrelated deal"))
    return pairs
