"""Dead-letter records: decoding and the choice of what to replay."""

from __future__ import annotations

import base64
import json

import pytest

from omnistitch.dlq import DeadLetter, InvalidDeadLetter, ReplayReport, decode, event_id_of


def record(
    reason: str = "invalid_event", key: bytes | None = b"k", value: bytes | None = b"v"
) -> bytes:
    def b64(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode()

    body = {
        "stage": "ingest",
        "reason": reason,
        "detail": "...",
        "original_key_b64": b64(key),
        "original_value_b64": b64(value),
    }
    return json.dumps(body).encode()


def test_decode_restores_the_original_bytes() -> None:
    assert decode(record(key=b"email:a@b.c", value=b'{"event_id": "e1"}')) == DeadLetter(
        reason="invalid_event", stage="ingest", key=b"email:a@b.c", value=b'{"event_id": "e1"}'
    )
    assert decode(record(key=None)).key is None


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"{not json",
        b"[1]",
        b'{"detail": "no reason"}',
        record().replace(b'"dg=="', b'"!!"'),
    ],
)
def test_decode_rejects_what_is_not_a_dead_letter(raw: bytes | None) -> None:
    with pytest.raises(InvalidDeadLetter):
        decode(raw)


def test_bad_base64_is_invalid() -> None:
    body = json.loads(record())
    body["original_value_b64"] = "not base64!"
    with pytest.raises(InvalidDeadLetter):
        decode(json.dumps(body).encode())


def test_event_id_of_a_json_value() -> None:
    assert event_id_of(b'{"event_id": "e1"}') == "e1"
    assert event_id_of(b"{not json") is None
    assert event_id_of(b'{"event_id": 3}') is None
    assert event_id_of(None) is None


def test_reason_filter_and_limit() -> None:
    report = ReplayReport(dry_run=True)
    invalid, unusable = decode(record("invalid_event")), decode(record("no_usable_identifier"))
    assert report.wants(invalid, (), None)
    assert report.wants(invalid, ("invalid_event",), None)
    assert not report.wants(unusable, ("invalid_event",), None)
    assert not report.wants(decode(record(value=None)), (), None)  # nothing to replay
    report.matched = 2
    assert report.wants(invalid, (), 3)
    assert not report.wants(invalid, (), 2)
    report.by_reason["invalid_event"] += 2
    assert report.as_dict() == {
        "dry_run": True,
        "scanned": 0,
        "matched": 2,
        "replayed": 0,
        "invalid": 0,
        "by_reason": {"invalid_event": 2},
    }
