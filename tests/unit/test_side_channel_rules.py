"""The pure rules behind issue 11's fixes: what text can be stored, what a score may say to whom,
who may change a lead, and the problem+json gunicorn writes for what it refuses itself."""
from __future__ import annotations

import json
import socket

import pytest

from crmkit.auth import Principal
from crmkit.errors import Forbidden
from crmkit.text import unpaired_surrogate_at
from services.leads import domain, scoring


@pytest.mark.parametrize(("document", "where"), [
    ({"company": "A\ud800"}, "company"),
    ({"rules": [{"name": "ok"}, {"name": "\udfff"}]}, "rules[1].name"),
    (["\ud83d"], "[0]"),
    ({"\ud800": 1}, "body"),
    ({"company": "\U0001F600 paired is fine", "n": 1, "x": None}, None),
    ("plain", None),
])
def test_unpaired_surrogates_are_found_where_they_are(document, where):
    assert unpaired_surrogate_at(document) == where


def test_a_score_without_money_rules_is_what_money_blind_roles_see():
    rules = scoring.DEFAULT_RULES
    score, reasons = scoring.score({"email": "a@b.cn", "estimated_value": "150000"}, rules)
    assert score == 10 + 10 + 15
    assert [r["rule"] for r in scoring.public_reasons(reasons)] == ["reachable by email"]
    assert scoring.public_score(reasons) == 10
    # A reason stored before reasons named their field says nothing to money-blind roles.
    assert scoring.public_reasons([{"rule": "old", "points": 30}]) == []


def test_money_rules_must_be_kept_exactly_by_those_who_may_not_read_money():
    current = scoring.DEFAULT_RULES
    domain.check_money_rules_kept(current, [dict(r) for r in reversed(current)])  # reordered: the same rules
    others_changed = [{**r, "points": 99} if r["field"] == "email" else r for r in current]
    domain.check_money_rules_kept(current, others_changed)
    for proposed in ([r for r in current if r["field"] != "estimated_value"],
                     [*current, {"name": "rung", "field": "quoted_price", "op": "gte", "value": 1, "points": 0}],
                     [{**r, "value": 1} if r["field"] == "estimated_value" else r for r in current]):
        with pytest.raises(Forbidden):
            domain.check_money_rules_kept(current, proposed)


@pytest.mark.parametrize(("principal", "owner", "team", "may"), [
    (Principal("ann", "rep", teams=("east",)), "ann", "east", True),
    (Principal("bo", "rep", teams=("west",)), "ann", "east", False),
    (Principal("bo", "rep", teams=("east",)), None, "east", False),   # a team's queue is its manager's
    (Principal("mia", "manager", manages=("east",)), "ann", "east", True),
    (Principal("mia", "manager", manages=("east",)), None, None, True),  # the shared queue
    (Principal("wes", "manager", manages=("west",)), "ann", "east", False),
    (Principal("mark", "marketing"), None, None, False),
    (Principal("erin", "executive"), "ann", "east", True),
])
def test_who_may_change_a_lead_and_so_what_dedupe_may_write_into(principal, owner, team, may):
    assert domain.may_change(principal, owner, team) is may


def test_gunicorn_refusals_are_problem_json():
    from gunicorn import util

    from crmkit import gunicorn_conf  # noqa: F401 - installs the writer

    left, right = socket.socketpair()
    try:
        util.write_error(left, 414, "URI Too Long", "Request Line is too large (9000 > 4094)")
        raw = right.recv(65536).decode()
    finally:
        left.close()
        right.close()
    head, body = raw.split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 414 URI Too Long") and "Content-Type: application/problem+json" in head
    assert json.loads(body)["status"] == 414


def test_blind_collisions_rest_on_facts_too_coarse_to_probe():
    import datetime as dt
    from decimal import Decimal

    from services.opportunities.collisions import Deal, blind_collision

    products = [{"sku": "SW"}, {"sku": "AP"}]
    hidden = Deal.of("华东智联系统集成有限公司", "华东", products, Decimal("480000"), dt.date(2026, 11, 15))

    def probe(name="Bo Probe Co", region="华东", skus=("SW", "AP"), amount="1", day=dt.date(2026, 11, 15)):
        return blind_collision(Deal.of(name, region, [{"sku": s} for s in skus], Decimal(amount), day), hidden)

    # The amount never matters; the date only by quarter (the same or the next one).
    assert {probe(amount=a) for a in ("1", "479999", "480000", "999999999")} == {True}
    assert {probe(day=dt.date(2026, 10, 1) + dt.timedelta(days=d)) for d in range(0, 92)} == {True}
    assert probe(day=dt.date(2027, 2, 1)) and not probe(day=dt.date(2027, 4, 1))
    # One product in common, or another region: no project in common.
    assert not probe(skus=("SW",)) and not probe(region="华南")
    # A name only by the very same distinctive name, never by resemblance.
    assert not probe(name="华东智", skus=()) and not probe(name="华东智联X", skus=())
    assert probe(name="华东智联有限公司", skus=())
