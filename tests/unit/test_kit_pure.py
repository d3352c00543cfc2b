"""Pure pieces of the kit: envelope, cursors, ETags, visibility conditions."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import pytest
from sqlalchemy import Column, String, Table, create_engine, insert, select

from crmkit.auth import Principal
from crmkit.db import new_metadata
from crmkit.etag import etag_for
from crmkit.events import BadEnvelope, encode, new_event, parse_envelope
from crmkit.pagination import BadQuery, SortSpec, decode_cursor, encode_cursor, parse_sort
from crmkit.visibility import VisibilityRule, visible


def test_envelope_round_trip():
    event = new_event("lead.created", uuid.UUID(int=1), {"a": 1}, source="leads", actor="u1", correlation_id="c1")
    parsed = parse_envelope(encode(event))
    assert parsed["subject"] == str(uuid.UUID(int=1)) and parsed["version"] == 1 and parsed["correlation_id"] == "c1"
    assert parsed["time"].tzinfo is not None


@pytest.mark.parametrize("raw", [
    b"not json", b"[1,2]", b"\xff\xfe",
    json.dumps({"id": "x", "type": "t", "version": "1", "source": "s", "time": "2026-11-01T00:00:00Z",
                "subject": "s", "data": {}}).encode(),  # version as a string
    json.dumps({"id": "x", "type": "t", "version": 1, "source": "s", "time": "2026-11-01T00:00:00",
                "subject": "s", "data": {}}).encode(),  # naive time
    json.dumps({"id": "x", "type": "t", "version": 1, "source": "s", "time": "2026-11-01T00:00:00Z",
                "subject": "s"}).encode(),  # no data
])
def test_bad_envelopes_are_refused(raw):
    with pytest.raises(BadEnvelope):
        parse_envelope(raw)


def _envelope_with(text_bytes: bytes) -> bytes:
    event = new_event("lead.created", "s", {"company": "PLACEHOLDER"}, source="leads")
    return encode(event).replace(b"PLACEHOLDER", text_bytes)


@pytest.mark.parametrize("raw", [
    _envelope_with(b"\\ud800"), _envelope_with(b"\\uDC00 and more"),  # escaped lone surrogates
    _envelope_with(b"\xed\xa0\x80"),  # a surrogate encoded as UTF-8 bytes, which json.loads(bytes) lets through
    '{"id": "\ud800"}'.encode("utf-16", "surrogatepass"),  # UTF-16 JSON, which json.loads(bytes) reads too
])
def test_an_unpaired_surrogate_is_refused_whichever_way_it_is_written(raw):
    """The fast path (strict UTF-8 text with no surrogate escape) skips walking the document; every
    other way a lone surrogate can be written still reaches the walk."""
    with pytest.raises(BadEnvelope, match="surrogate"):
        parse_envelope(raw)


def test_a_paired_surrogate_and_an_escaped_backslash_are_text_like_any_other():
    for written, meant in ((b"\\ud83d\\ude00", "\U0001F600"), (b"C:\\\\udata", "C:\\udata")):
        assert parse_envelope(_envelope_with(written))["data"]["company"] == meant


def test_cursor_round_trip_and_tampering():
    sort = SortSpec("created_at", True)
    when, row_id = dt.datetime(2026, 11, 1, tzinfo=dt.UTC), uuid.uuid4()
    types = (dt.datetime, uuid.UUID)
    assert decode_cursor(encode_cursor(sort, when, row_id), sort, *types) == (when, row_id)
    for bad in (encode_cursor(sort, when.replace(tzinfo=None), row_id),  # naive time
                encode_cursor(sort, "yesterday", row_id),  # wrong type
                encode_cursor(sort, when, "not-a-uuid"),
                encode_cursor(sort, True, row_id),
                "bm90IGEgY3Vyc29y"):
        with pytest.raises(BadQuery):
            decode_cursor(bad, sort, *types)
    with pytest.raises(BadQuery):
        decode_cursor(encode_cursor(sort, when, row_id), SortSpec("created_at", False), *types)


def test_crafted_cursor_values_that_the_database_cannot_take_are_refused():
    """Well-typed but unstorable: each of these reached the database as a 500 before."""
    row_id = uuid.uuid4()
    cases = [(SortSpec("created_at", True), dt.datetime.fromisoformat("0001-01-01T00:00:00+14:00"), dt.datetime),
             (SortSpec("amount", True), decimal.Decimal("sNaN"), decimal.Decimal),
             (SortSpec("amount", True), decimal.Decimal("1E+200000"), decimal.Decimal),
             (SortSpec("name", False), "a\x00b", str)]
    for sort, value, value_type in cases:
        with pytest.raises(BadQuery):
            decode_cursor(encode_cursor(sort, value, row_id), sort, value_type, uuid.UUID)
    fine = SortSpec("amount", True)
    assert decode_cursor(encode_cursor(fine, decimal.Decimal("12.50"), row_id), fine, decimal.Decimal, uuid.UUID)[0] \
        == decimal.Decimal("12.50")


def test_sort_parsing():
    assert parse_sort("-score", {"score"}, "-created_at") == SortSpec("score", True)
    assert parse_sort(None, {"created_at"}, "-created_at") == SortSpec("created_at", True)
    with pytest.raises(BadQuery):
        parse_sort("password_hash", {"score"}, "-score")


def test_etags():
    assert etag_for(3) == '"v3"'


@pytest.fixture
def records():
    """An in-memory table of records owned by various people, to run visibility conditions on."""
    md = new_metadata()
    t = Table("records", md, Column("id", String, primary_key=True), Column("owner_id", String),
              Column("team_id", String), Column("members", String))
    engine = create_engine("sqlite://")
    md.create_all(engine)
    rows = [("ann-1", "ann", "east", ""), ("bob-1", "bob", "west", "svc"), ("queue-1", None, None, ""),
            ("carl-1", "carl", "east-2", "ann"), ("west-queue-1", None, "west", "")]
    with engine.begin() as conn:
        conn.execute(insert(t), [dict(zip(("id", "owner_id", "team_id", "members"), r, strict=True)) for r in rows])

    def seen_by(principal, **rule_options):
        rule = VisibilityRule(owner_column=t.c.owner_id, team_column=t.c.team_id,
                              member_condition=lambda uid: t.c.members.contains(uid), **rule_options)
        with engine.connect() as conn:
            return set(conn.execute(select(t.c.id).where(visible(principal, rule))).scalars())
    return seen_by


def test_visibility_per_role(records):
    assert records(Principal("ann", "rep", teams=("east",))) == {"ann-1", "carl-1"}  # own + virtual team
    assert records(Principal("bob", "rep", teams=("west",))) == {"bob-1"}
    assert records(Principal("m", "manager", manages=("east", "east-2"))) == {"ann-1", "carl-1"}
    assert records(Principal("m", "manager", manages=("east",)), managers_see_unowned=True) == {"ann-1", "queue-1"}
    assert records(Principal("w", "manager", manages=("west",)), managers_see_unowned=True) == {
        "bob-1", "queue-1", "west-queue-1"}  # a lead routed to west's queue is west's alone
    assert records(Principal("svc", "service")) == {"bob-1"}  # only where the virtual team lists them
    assert records(Principal("mk", "marketing")) == set()
    assert records(Principal("mk", "marketing"), also_sees_all=frozenset({"marketing"})) == {
        "ann-1", "bob-1", "queue-1", "carl-1", "west-queue-1"}
    assert len(records(Principal("x", "executive"))) == len(records(Principal("a", "admin"))) == 5


@pytest.mark.parametrize("raw", [None, b'{"id": ' + b"9" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000])
def test_messages_that_break_json_itself_are_bad_envelopes(raw):
    """A tombstone, an integer past Python's digit limit, absurd nesting: dead letters, not a crash."""
    with pytest.raises(BadEnvelope):
        parse_envelope(raw)


# ---- fields that accept exactly what the OpenAPI document says (issue 13) ------------------------------------
def test_a_flag_is_true_or_false_and_nothing_else():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import Flag

    class S(Schema):
        f = Flag()

    assert S().load({"f": True}) == {"f": True} and S().load({"f": False}) == {"f": False}
    for wrong in (0, 1, "true", "yes", None):
        with pytest.raises(ValidationError):
            S().load({"f": wrong})


def test_money_is_a_decimal_string_unless_an_outside_producer_may_send_numbers():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import Money

    class Api(Schema):
        m = Money()

    class Inbound(Schema):
        m = Money(strings_only=False)

    assert Api().load({"m": "12500.5"}) == {"m": decimal.Decimal("12500.50")}
    for wrong in (12500, 12500.5, True):
        with pytest.raises(ValidationError, match="decimal string"):
            Api().load({"m": wrong})
    assert Inbound().load({"m": 12500}) == {"m": decimal.Decimal("12500.00")}


def test_a_whole_number_is_an_integer_as_json_schema_means_it():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import WholeNumber

    class S(Schema):
        n = WholeNumber()

    assert S().load({"n": 1982}) == {"n": 1982} and S().load({"n": 1982.0}) == {"n": 1982}
    for wrong in (1982.5, "1982", True):
        with pytest.raises(ValidationError):
            S().load({"n": wrong})


def test_documented_patterns_match_exactly_what_is_accepted():
    import re

    from marshmallow import Schema, ValidationError

    from crmkit.fields import TIMESTAMP_PATTERN, Day, Timestamp

    class S(Schema):
        t = Timestamp()
        d = Day()

    day_pattern = S().fields["d"].metadata["pattern"]
    for text, ok in (("2026-12-01T09:30:00Z", True), ("2026-12-01T09:30:00.123+08:00", True),
                     ("1899-12-31T23:00:00Z", False), ("3000-01-01T00:00:00Z", False)):
        assert bool(re.match(TIMESTAMP_PATTERN, text)) is ok
        try:
            S().load({"t": text})
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is ok, text
    for text, ok in (("2026-12-01", True), ("1899-12-31", False), ("3000-01-01", False)):
        assert bool(re.match(day_pattern, text)) is ok
        try:
            S().load({"d": text})
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted is ok, text


# ---- domain errors know nothing of HTTP; crmkit.web maps them in one place (issue 13) ------------------------
def test_every_domain_error_has_one_status_and_keeps_its_details():
    from crmkit import errors
    from crmkit.web import DOMAIN_STATUS, problem_of

    kinds = [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.DomainError)
             and k is not errors.DomainError]
    assert set(kinds) == set(DOMAIN_STATUS)
    assert not any(hasattr(k, "status") for k in kinds)  # the domain's words, not HTTP's
    problem = problem_of(errors.Conflict("in progress; retry", errors={"key": ["busy"]}, retry_after=1))
    assert (problem.status, problem.detail, problem.errors, problem.headers) == (
        409, "in progress; retry", {"key": ["busy"]}, {"Retry-After": "1"})
    assert problem_of(errors.StaleVersion("changed")).status == 412
    assert problem_of(errors.VersionRequired("send If-Match")).status == 428


def test_money_strings_are_exactly_the_documented_form_never_rounded():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import Money

    class S(Schema):
        m = Money()

    assert S().load({"m": "12500"}) == {"m": decimal.Decimal("12500.00")}
    for wrong in ("0.125", "0.001", "-0", "1E+2", "12_000", " 5 ", "+5", "\u0661\u0662\u0663", "\uff10.\uff15", "1" * 13):  # Arabic-Indic, fullwidth digits
        with pytest.raises(ValidationError):
            S().load({"m": wrong})


def test_a_timestamp_is_checked_in_utc_too():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import Timestamp

    class S(Schema):
        t = Timestamp()

    with pytest.raises(ValidationError):  # 1899-12-31T23:30 in UTC: the API could not take it back
        S().load({"t": "1900-01-01T00:30:00+01:00"})
    assert S().load({"t": "1900-01-01T00:30:00-01:00"})["t"].year == 1900


def test_a_query_flag_is_exactly_true_or_false():
    from marshmallow import Schema, ValidationError

    from crmkit.fields import QueryFlag

    class S(Schema):
        f = QueryFlag()

    assert S().load({"f": "true"}) == {"f": True} and S().load({"f": "false"}) == {"f": False}
    for wrong in ("1", "yes", "True", True):
        with pytest.raises(ValidationError):
            S().load({"f": wrong})


def test_a_consumer_outlives_the_broker_going_away_while_it_polls():
    """kafka-python raises from poll() when the group coordinator cannot be reached (a broker
    restart): the consumer waits and polls again instead of taking the worker down."""
    import threading

    from kafka.errors import KafkaConnectionError

    from crmkit.consumer import IdempotentConsumer

    stop = threading.Event()

    class Broker:
        polls = 0

        def poll(self, timeout_ms):
            Broker.polls += 1
            if Broker.polls == 1:
                raise KafkaConnectionError("111 ECONNREFUSED")
            stop.set()
            return {}

        def assignment(self):
            return set()

    consumer = IdempotentConsumer(db=None, processed_table=None, consumer=Broker(), producer=None, service="t",
                                  group_id="g", handlers={})
    consumer.run(stop)
    assert Broker.polls == 2
