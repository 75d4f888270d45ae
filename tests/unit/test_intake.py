"""Ingest's fast decoding (msgspec) against the public model: the same verdict on every
record, the same event and the same identity request wherever both accept it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from omnistitch.bench import to_records
from omnistitch.journeys import generate
from pipeline.intake import FAST_MAX_OPENINGS, WireEvent, decode_event, intake, resolve_request
from pipeline.ops import ResolveRequest
from pipeline.rules import Rules
from schemas.events import Channel, RawEvent

RULES = Rules()

BASE: dict[str, Any] = {
    "schema_version": 1,
    "event_id": "e1",
    "channel": "web",
    "source": "segment",
    "kind": "page",
    "name": None,
    "occurred_at": "2026-03-01T17:26:54.210269Z",
    "received_at": "2026-03-01T17:26:55Z",
    "identifiers": [
        {"type": "email", "value": "Alice@Example.com", "verified": False},
        {"type": "phone", "value": "+44 20 7946 0958"},
    ],
    "traits": {"plan": "pro"},
    "properties": {"url": "https://example.com/pricing"},
    "payload": {"n": [1, 2.5, None, True, {"deep": "x"}]},
}


def _public(value: bytes) -> RawEvent | None:
    try:
        return RawEvent.model_validate_json(value)
    except ValidationError:
        return None


def _request(event: RawEvent | WireEvent, value: bytes) -> bytes | str:
    out = resolve_request(event, value, RULES, topic="raw", partition=1, offset=7)
    return out.encode() if isinstance(out, ResolveRequest) else out.reasons


def agree(value: bytes) -> RawEvent | WireEvent | None:
    """``decode_event`` and the public model give the same verdict on ``value`` and, where
    they accept it, the same event and the same identity request; returns the event."""
    public = _public(value)
    try:
        event = decode_event(value)
    except ValidationError:
        assert public is None, f"refused what the public model accepts: {value[:200]!r}"
        return None
    assert public is not None, f"accepted what the public model refuses: {value[:200]!r}"
    for field in ("schema_version", "event_id", "channel", "source", "kind", "name"):
        assert getattr(event, field) == getattr(public, field), field
    for field in ("occurred_at", "received_at"):
        mine, theirs = getattr(event, field), getattr(public, field)
        assert (mine, mine.utcoffset()) == (theirs, theirs.utcoffset()), field
    assert [(i.type, i.value, i.verified) for i in event.identifiers] == [
        (i.type, i.value, i.verified) for i in public.identifiers
    ]
    for field in ("traits", "properties", "payload"):  # as JSON: NaN is itself, 1 is not 1.0
        mine, theirs = getattr(event, field), getattr(public, field)
        assert json.dumps(mine, sort_keys=True) == json.dumps(theirs, sort_keys=True), field
    assert _request(event, value) == _request(public, value)
    return event


def _with(**changes: Any) -> bytes:
    return json.dumps({**BASE, **changes}).encode()


def _ident(**changes: Any) -> bytes:
    return _with(identifiers=[{"type": "email", "value": "a@b.co", **changes}])


def _nested(depth: int) -> bytes:
    return _with(payload={}).replace(
        b'"payload": {}', b'"payload": {"x": ' + b"[" * depth + b"]" * depth + b"}"
    )


EDGES = {
    "valid": _with(),
    "lowercase t and z": _with(occurred_at="2026-03-01t17:26:54z"),
    "a space for the T": _with(occurred_at="2026-03-01 17:26:54Z"),
    "offset without colon": _with(occurred_at="2026-03-01T17:26:54+0530"),
    "offset -00:00": _with(occurred_at="2026-03-01T17:26:54-00:00"),
    "offset +23:59": _with(occurred_at="2026-03-01T17:26:54+23:59"),
    "offset +24:00": _with(occurred_at="2026-03-01T17:26:54+24:00"),
    "offset hours only": _with(occurred_at="2026-03-01T17:26:54+01"),
    "no seconds": _with(occurred_at="2026-03-01T17:26Z"),
    "naive": _with(occurred_at="2026-03-01T17:26:54"),
    "date only": _with(occurred_at="2026-03-01"),
    "unix seconds": _with(occurred_at=1772385414),
    "leap second": _with(occurred_at="2026-03-01T17:26:60Z"),
    "30 February": _with(occurred_at="2026-02-30T17:26:54Z"),
    "hour 24": _with(occurred_at="2026-03-01T24:00:00Z"),
    "year 1": _with(occurred_at="0001-01-01T00:00:00Z"),
    "year 0": _with(occurred_at="0000-01-01T00:00:00Z"),
    "comma fraction": _with(occurred_at="2026-03-01T17:26:54,5Z"),
    "empty fraction": _with(occurred_at="2026-03-01T17:26:54.Z"),
    "7 fractional digits": _with(occurred_at="2026-03-01T17:26:54.1234565Z"),
    "9 fractional digits, rounding up a second": _with(
        received_at="2026-03-01T17:26:54.999999999Z"
    ),
    "6 fractional digits": _with(occurred_at="2026-03-01T17:26:54.999999+01:00"),
    "time in a payload with 7 digits": _with(payload={"t": "10:00:00.1234567"}),
    "trailing space in time": _with(occurred_at="2026-03-01T17:26:54Z "),
    "type with a final newline": _ident(type="email\n"),
    "type upper case": _ident(type="Email"),
    "type of 32": _ident(type="e" * 32),
    "type of 33": _ident(type="e" * 33),
    "type with NUL": _ident(type="email\x00"),
    "value empty": _ident(value=""),
    "value of 512 two-byte": _ident(value="é" * 512),
    "value of 513 two-byte": _ident(value="é" * 513),
    "value of 512 astral": _ident(value="😀" * 512),
    "verified as a string": _ident(verified="true"),
    "verified as 1": _ident(verified=1),
    "verified null": _ident(verified=None),
    "identifier field unknown": _ident(x=1),
    "identifier without value": json.dumps({**BASE, "identifiers": [{"type": "email"}]}).encode(),
    "64 identifiers": _with(identifiers=[{"type": "email", "value": "a@b.co"}] * 64),
    "65 identifiers": _with(identifiers=[{"type": "email", "value": "a@b.co"}] * 65),
    "no identifiers": json.dumps({k: v for k, v in BASE.items() if k != "identifiers"}).encode(),
    "schema 2": _with(schema_version=2),
    "schema 1.0": _with(schema_version=1.0),
    "schema true": _with(schema_version=True),
    "schema missing": json.dumps({k: v for k, v in BASE.items() if k != "schema_version"}).encode(),
    "channel upper case": _with(channel="WEB"),
    "channel unknown": _with(channel="fax"),
    "event id empty": _with(event_id=""),
    "event id of 256": _with(event_id="e" * 256),
    "event id of 257": _with(event_id="e" * 257),
    "event id a number": _with(event_id=1),
    "source of 65": _with(source="s" * 65),
    "kind empty": _with(kind=""),
    "name of 513": _with(name="n" * 513),
    "unknown field": _with(extra=1),
    "traits a list": _with(traits=[]),
    "properties null": _with(properties=None),
    "payload with a big integer": _with(payload={"x": 10**30}),
    "payload with 5,000 digits": _with(payload={}).replace(
        b'"payload": {}', b'"payload": {"x": ' + b"9" * 5000 + b"}"
    ),
    "payload with 1e400": _with(payload={}).replace(b'"payload": {}', b'"payload": {"x": 1e400}'),
    "payload with NaN": _with(payload={"x": float("nan")}),
    "nested 100 deep": _nested(100),
    "nested 199 deep": _nested(199),
    "nested 200 deep": _nested(200),
    "nested 5,000 deep": _nested(5000),
    "repeated key, last valid": _with().replace(
        b'"event_id": "e1"', b'"event_id": "", "event_id": "e1"'
    ),
    "repeated key, last empty": _with().replace(
        b'"event_id": "e1"', b'"event_id": "e1", "event_id": ""'
    ),
    "lone surrogate": _with().replace(b'"e1"', b'"\\ud800"'),
    "escaped newline in event id": _with(event_id="e\n1"),
    "raw control character": _with().replace(b'"e1"', b'"e\x011"'),
    "invalid UTF-8": _with().replace(b"e1", b"e1\xff"),
    "byte order mark": b"\xef\xbb\xbf" + _with(),
    "trailing garbage": _with() + b" x",
    "trailing whitespace": _with() + b" \n",
    "an array": b"[]",
    "empty": b"",
    "not JSON": b"page view",
}


@pytest.mark.parametrize("name", list(EDGES))
def test_the_fast_decoding_agrees_with_the_public_model(name: str) -> None:
    agree(EDGES[name])


def test_ordinary_events_take_the_fast_path_and_odd_ones_the_public_model() -> None:
    assert isinstance(decode_event(EDGES["valid"]), WireEvent)
    # accepted by the public model only: it decides
    for name in ("verified as a string", "payload with NaN", "repeated key, last valid"):
        assert isinstance(decode_event(EDGES[name]), RawEvent), name
    # msgspec would read these differently (depth, rounding): never tried
    assert isinstance(decode_event(EDGES["7 fractional digits"]), RawEvent)
    assert isinstance(decode_event(_nested(FAST_MAX_OPENINGS)), RawEvent)
    with pytest.raises(ValidationError, match="event_id"):
        decode_event(EDGES["event id empty"])


def test_a_refused_record_is_named_by_the_public_model() -> None:
    rejected = intake(EDGES["type upper case"], RULES, topic="raw", partition=0, offset=3)
    assert not isinstance(rejected, tuple)
    assert rejected.reason == "invalid_event"
    assert "identifiers.0.type" in rejected.detail  # pydantic's wording, naming the field


def test_the_bench_mix_takes_the_fast_path_with_the_same_requests() -> None:
    records = to_records(generate(300, 1500, 11))
    fast = sum(isinstance(agree(value), WireEvent) for _key, value in records)
    assert fast == len(records)


def _constraints(schema: dict[str, Any]) -> dict[str, Any]:
    """Each property's validation keywords in a JSON schema, by path (``$ref`` followed),
    spelt alike for msgspec and pydantic: ``const`` as a one-value ``enum``, and msgspec's
    ``\\Z`` as the public model's ``$`` (the end of the string, in its regex engine)."""
    defs = schema.get("$defs", {})
    found: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        keep: dict[str, Any] = {
            k: node[k]
            for k in ("minLength", "maxLength", "maxItems", "pattern", "format")
            if k in node
        }
        if "pattern" in keep:
            keep["pattern"] = keep["pattern"].replace("\\Z", "$")
        if "const" in node or "enum" in node:
            keep["enum"] = sorted(node.get("enum", [node.get("const")]), key=str)
        elif "type" in node:
            keep["type"] = node["type"]
        if node.get("additionalProperties") is False:
            keep["closed"] = True
        if "required" in node:
            keep["required"] = sorted(node["required"])
        found[path] = keep
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        for index, choice in enumerate(node.get("anyOf", [])):
            walk(choice, f"{path}|{index}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema if "$ref" not in schema else defs[schema["$ref"].rsplit("/", 1)[1]], "$")
    return found


def test_the_fast_decoder_keeps_the_public_models_constraints() -> None:
    """A constraint added to, or changed in, the public model (schemas/events.py) must be
    made in ``WireEvent`` too, or msgspec would accept what the public model refuses."""
    assert _constraints(msgspec.json.schema(WireEvent)) == _constraints(
        RawEvent.model_json_schema()
    )


# -- generated records -------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)
_TIMES = st.builds(
    lambda date, sep, clock, fraction, offset: f"{date}{sep}{clock}{fraction}{offset}",
    st.sampled_from(["2026-03-01", "2024-02-29", "2026-02-29", "0001-01-01", "9999-12-31"]),
    st.sampled_from(["T", "t", " ", "_"]),
    st.sampled_from(["17:26:54", "00:00:00", "23:59:59", "24:00:00", "17:26:60", "17:26"]),
    st.sampled_from(["", "."]).flatmap(
        lambda dot: st.just("") if not dot else st.text("0123456789", max_size=10).map(dot.__add__)
    ),
    st.sampled_from(
        ["Z", "z", "", "+00:00", "-00:00", "+05:30", "+0530", "-23:59", "+24:00", "+01"]
    ),
)
_IDENTIFIER = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["email", "phone", "user_id", "Email", "e" * 33, "x\n", ""]),
        "value": st.sampled_from(["a@b.co", "+44 20 7946 0958", "", " ", "é" * 513]) | _TEXT,
    },
    optional={
        "verified": st.sampled_from([True, False, None, "true", 1]),
        "extra": st.just(1),
    },
)
_FIELDS = {
    "schema_version": st.sampled_from([1, 2, 1.0, True, "1"]),
    "event_id": st.sampled_from(["e1", "", "e" * 257]) | _TEXT,
    "channel": st.sampled_from([*(c.value for c in Channel), "WEB", "fax"]),
    "source": st.sampled_from(["segment", "", "s" * 65]),
    "kind": st.sampled_from(["page", "track", ""]),
    "name": st.none() | _TEXT,
    "occurred_at": _TIMES | st.integers(0, 2**33),
    "received_at": _TIMES,
    "identifiers": st.lists(_IDENTIFIER, max_size=4),
    "traits": st.dictionaries(_TEXT, _JSON, max_size=3) | _JSON,
    "properties": st.dictionaries(_TEXT, _JSON, max_size=3),
    "payload": st.dictionaries(_TEXT, _JSON, max_size=3),
}


@st.composite
def records(draw: st.DrawFn) -> bytes:
    record = dict(BASE)
    for field in draw(st.sets(st.sampled_from(sorted(_FIELDS)), max_size=4)):
        record[field] = draw(_FIELDS[field])
    for field in draw(st.sets(st.sampled_from(sorted(BASE)), max_size=1)):
        del record[field]
    if draw(st.booleans()):
        record = {**record, draw(st.sampled_from(["extra", "Event_id"])): 1}
    return json.dumps(record, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_generated_records_get_the_same_verdict_event_and_request(value: bytes) -> None:
    agree(value)


@given(st.datetimes(timezones=st.timezones()), st.integers(0, 999_999))
def test_times_read_alike(when: datetime, micros: int) -> None:
    if when.utcoffset() is None:
        return
    agree(_with(occurred_at=when.replace(microsecond=micros).isoformat()))
