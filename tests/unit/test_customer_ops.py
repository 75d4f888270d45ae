"""Customer ops on ``<app>-customer-ops`` as msgspec structs (``pipeline/ops.py``): records
written by the pydantic models they replaced read back and write the same bytes, and an
event ingest accepted in a spelling only the public model reads still folds."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from pipeline import context_state
from pipeline.ops import (
    AnyCustomerOp,
    EventForward,
    EventOp,
    MergeOp,
    RedirectOp,
    RestoreOp,
    SplitOp,
    TickOp,
    batch_records,
    customer_ops,
    decode_split,
    encode_op,
)
from schemas.events import Channel, Identifier, RawEvent

EVENT = RawEvent(
    event_id="evt-1",
    channel=Channel.SMS,
    source="twilio",
    kind="message",
    occurred_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    received_at=datetime(2026, 3, 1, 9, 30, 1, 250000, tzinfo=UTC),
    identifiers=[Identifier(type="phone", value="(415) 555-0100")],
    properties={"text": "hi", "direction": "inbound"},
)
CANONICAL = Identifier(type="phone", value="+14155550100", verified=True)

#: Each op as the pydantic models wrote it (fields in their declared order, ``op`` first).
WRITTEN_BY_PYDANTIC = [
    b'{"op":"merge","customer_id":"c2","into_id":"c1","event_id":"evt-1","decided_at":6}',
    b'{"op":"split","customer_id":"c1","pieces":{"c1":["email:a@x.com"],"c3":["phone:+1"]},'
    b'"id_map":{"c1":"c1","c3":"c3"},"decided_at":9}',
    b'{"op":"restore","customer_id":"c3","context":null,"split":{"op":"split",'
    b'"customer_id":"c1","pieces":{"c3":["phone:+1"]},"id_map":{"c3":"c3"},"decided_at":9},'
    b'"decided_at":null}',
    b'{"op":"redirect","customer_id":"c2","into_id":"c3","decided_at":9}',
    b'{"op":"erase","customer_id":"c4"}',
    b'{"op":"tick","customer_id":"c5"}',
]


@pytest.mark.parametrize("raw", WRITTEN_BY_PYDANTIC, ids=lambda r: r.split(b'"')[3].decode())
def test_an_op_written_by_the_pydantic_models_reads_back_and_writes_the_same_bytes(
    raw: bytes,
) -> None:
    [op] = customer_ops(raw)
    assert encode_op(op) == raw


def test_a_batch_keeps_its_ops_in_order() -> None:
    ops: list[AnyCustomerOp] = [
        MergeOp(customer_id="c2", into_id="c1", event_id="e", decided_at=1),
        TickOp(customer_id="c1"),
        RedirectOp(customer_id="c9", into_id="c1"),
    ]
    [record] = batch_records([encode_op(op) for op in ops], "ops")
    assert customer_ops(record) == ops


def test_an_event_op_folds_the_identifiers_the_identity_stage_accepted() -> None:
    wire = EventForward("c1", [CANONICAL], EVENT.model_dump_json().encode()).encode()
    [op] = customer_ops(wire)
    assert isinstance(op, EventOp)
    assert op.event == context_state.Event.of(EVENT.model_copy(update={"identifiers": [CANONICAL]}))
    assert [i.key for i in op.event.identifiers] == ["phone:+14155550100"]
    assert op.event.identifiers[0].verified


def test_an_event_only_the_public_model_reads_still_folds_and_its_batch_with_it() -> None:
    """A producer wrote ``occurred_at`` as epoch seconds and ``verified`` as a string:
    pydantic (ingest) accepts both, msgspec's strict reading does not."""
    odd = (
        b'{"event_id":"evt-2","channel":"web","source":"custom","kind":"page",'
        b'"occurred_at":1772357400,"received_at":"2026-03-01T09:30:01Z",'
        b'"identifiers":[{"type":"anonymous_id","value":"a1","verified":"false"}]}'
    )
    RawEvent.model_validate_json(odd)  # what ingest accepted
    tick = TickOp(customer_id="c1")
    forward = EventForward("c1", [], odd).encode()
    [record] = batch_records([encode_op(tick), forward], "ops")
    first, second = customer_ops(record)
    assert first == tick
    assert isinstance(second, EventOp)
    assert second.event.occurred_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert second.event.identifiers == []  # the identity stage accepted none of them


def test_a_restore_carries_its_context_and_split() -> None:
    split = SplitOp(
        customer_id="c1", pieces={"c3": ["phone:+1"]}, id_map={"c3": "c3"}, decided_at=9
    )
    ctx = context_state.CustomerContext(customer_id="c3", version=4)
    op = RestoreOp(customer_id="c3", context=ctx, split=split, decided_at=9)
    assert customer_ops(encode_op(op)) == [op]
    assert decode_split(encode_op(split)) == split


def test_a_record_that_is_not_an_op_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        customer_ops(b'{"op":"teleport","customer_id":"c1"}')
