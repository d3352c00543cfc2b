"""Pure rules of the opportunities service: collision scoring and its candidate keys, stage
gating, forecast categories and account tiers."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest

from crmkit.errors import Conflict, ValidationFailed
from services.opportunities import collisions, domain
from services.opportunities.collisions import Deal, compare, distinctive_name, normalize_name
from tests.support.collision_pairs import generate

D = Decimal


def deal(name, region="East", skus=("SW-9000", "AP-200"), amount="500000", close=dt.date(2026, 12, 20)):
    return Deal.of(name, region, [{"sku": s} for s in skus], D(amount), close)


@pytest.mark.parametrize("a, b", [
    ("上海华信系统集成有限公司", "华信系统集成(上海)有限公司"),
    ("华东智联系统集成有限公司", "华东智联信息系统集成公司"),
    ("Acme Systems Integration Co., Ltd.", "ACME System Integrators Ltd"),
    ("\uff36\uff45\uff52\uff54\uff45\uff58 IT Services Ltd", "Vertex Information Technology Limited"),  # full-width
])
def test_names_written_differently_are_recognised(a, b):
    assert distinctive_name(a) == distinctive_name(b)


def test_legal_forms_and_places_do_not_make_names_alike():
    assert collisions.name_similarity(distinctive_name("华信系统集成有限公司"), distinctive_name("华星网络科技有限公司")) < 0.5
    assert normalize_name("有限公司") == "有限公司"  # nothing but a legal form: kept rather than emptied


def test_the_seeds_example_two_integrators_one_project():
    """Two reps, two differently named system integrators, one region, the same products, the same
    delivery time: one project chased twice."""
    a = deal("华东智联系统集成有限公司", close=dt.date(2026, 12, 20))
    b = deal("上海博远信息系统集成有限公司", close=dt.date(2026, 12, 22), amount="480000")
    match = compare(a, b)
    assert match.is_collision, match
    assert "same region" in match.reasons and any("2 of 2 products" in r for r in match.reasons)


@pytest.mark.parametrize("other", [
    deal("华东智联系统集成有限公司", skus=("CAM-1",), close=dt.date(2027, 9, 1), amount="30000"),  # same customer, later
    deal("博远软件有限公司", region="West"),                                                      # another region
    deal("博远软件有限公司", skus=("CAM-1", "NVR-2")),                                             # other products
    deal("博远软件有限公司", close=dt.date(2027, 5, 1)),                                           # months apart
])
def test_unrelated_deals_are_not_flagged(other):
    assert not compare(deal("华东智联系统集成有限公司"), other).is_collision


@pytest.mark.parametrize("seed", [11, 2026, 99])
def test_precision_and_recall_on_generated_pairs(seed):
    """1,000 labelled pairs per seed (the weights were chosen on seed 7, so these are held out).
    What it misses, by design, are projects quoted with one single product and reached through two
    differently named partners: one popular product in common, in a region and a few weeks, is what
    every deal for that product has (in the 200,000-deal benchmark, calling those collisions
    flagged a third of all new deals), so without a similar name it takes two or more products."""
    pairs = generate(1000, seed=seed)
    flagged = [compare(p.a, p.b).is_collision for p in pairs]
    tp = sum(f and p.same_deal for f, p in zip(flagged, pairs, strict=True))
    fp = sum(f and not p.same_deal for f, p in zip(flagged, pairs, strict=True))
    fn = sum(not f and p.same_deal for f, p in zip(flagged, pairs, strict=True))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"seed {seed}: precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")
    assert precision >= 0.98 and recall >= 0.80


def test_every_collision_shares_a_candidate_key():
    """Candidates are found by keys only, so a pair the scorer would flag must share one."""
    for pair in generate(1000, seed=5):
        if compare(pair.a, pair.b).is_collision:
            assert collisions.probe_keys(pair.a) & collisions.stored_keys(pair.b), pair


def test_close_dates_within_the_window_share_a_product_key():
    rng = random.Random(3)
    for _ in range(500):
        day = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
        other = day + dt.timedelta(days=rng.randint(-collisions.DATE_WINDOW_DAYS, collisions.DATE_WINDOW_DAYS))
        a, b = deal("Alpha", skus=("X-1",), close=day), deal("Omega", skus=("X-1",), close=other)
        assert collisions.probe_keys(a) & collisions.stored_keys(b)


# ---- stages -------------------------------------------------------------------------------------------
STAGES = domain.DEFAULT_STAGES


def test_moving_forward_needs_the_required_items_and_names_them():
    with pytest.raises(Conflict) as refused:
        domain.check_stage_move(STAGES, "open", "qualification", "needs_analysis", {})
    assert refused.value.errors["checklist"] == ["qualification/budget_confirmed: Budget confirmed",
                                                 "qualification/decision_maker_identified: Decision maker identified"]
    done = {"qualification:budget_confirmed": True, "qualification:decision_maker_identified": True}
    domain.check_stage_move(STAGES, "open", "qualification", "needs_analysis", done)


def test_skipping_stages_does_not_skip_their_checks_and_moving_back_needs_nothing():
    done = {"qualification:budget_confirmed": True, "qualification:decision_maker_identified": True}
    with pytest.raises(Conflict) as refused:
        domain.check_stage_move(STAGES, "open", "qualification", "quote", done)
    assert [e.split(":")[0] for e in refused.value.errors["checklist"]] == ["needs_analysis/needs_documented",
                                                                           "needs_confirmed/solution_agreed"]
    domain.check_stage_move(STAGES, "open", "quote", "qualification", {})
    assert domain.missing_items(STAGES, "needs_confirmed", "quote", {"needs_confirmed:solution_agreed": True}) == []


def test_closed_deals_and_unknown_stages_are_refused():
    with pytest.raises(Conflict):
        domain.check_stage_move(STAGES, "won", "quote", "negotiation", {})
    with pytest.raises(ValidationFailed):
        domain.check_stage_move(STAGES, "open", "quote", "nowhere", {})


def test_a_pipeline_document_must_be_coherent():
    with pytest.raises(ValidationFailed):
        domain.validate_stages([{"key": "a", "probability": 50}, {"key": "b", "probability": 20}])
    with pytest.raises(ValidationFailed):
        domain.validate_stages([{"key": "a", "probability": 10}, {"key": "a", "probability": 20}])
    domain.validate_stages(STAGES)


def test_forecast_categories_follow_stage_probability():
    assert [domain.forecast_category("open", p) for p in (10, 40, 79, 80, 90)] == \
        ["pipeline", "best_case", "best_case", "commit", "commit"]
    assert domain.forecast_category("won", 100) == "closed_won"


# ---- tiers -------------------------------------------------------------------------------------------
def test_tiers_split_revenue_80_15_5():
    revenue = {"a": D(500), "b": D(300), "c": D(100), "d": D(60), "e": D(40), "f": D(0)}
    # Shares before each account: a 0%, b 50%, c 80%, d 90%, e 96%: A, A, B, B, C; no revenue: unranked.
    assert domain.tiers_by_revenue(revenue) == {"a": "A", "b": "A", "c": "B", "d": "B", "e": "C", "f": "unranked"}


def test_tiers_do_not_depend_on_input_order():
    rng = random.Random(1)
    revenue = {f"acct-{i}": D(rng.choice([100, 200, 200, 500, 1000])) for i in range(200)}
    shuffled = dict(sorted(revenue.items(), key=lambda _: rng.random()))
    tiers = domain.tiers_by_revenue(revenue)
    assert tiers == domain.tiers_by_revenue(shuffled)
    a_revenue = sum(v for k, v in revenue.items() if tiers[k] == "A")
    assert a_revenue / sum(revenue.values()) >= D("0.8")  # A makes at least 80%...
    smallest_a = min(v for k, v in revenue.items() if tiers[k] == "A")
    assert a_revenue - smallest_a < D("0.8") * sum(revenue.values())  # ...and no more accounts than that takes


def test_an_undated_deal_and_a_dated_one_find_each_other_whichever_comes_first():
    dated, undated = deal("Alpha", skus=("X-1",)), deal("Omega", skus=("X-1",), close=None)
    assert collisions.probe_keys(undated) & collisions.stored_keys(dated)
    assert collisions.probe_keys(dated) & collisions.stored_keys(undated)
