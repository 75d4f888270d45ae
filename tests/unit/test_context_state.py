"""The context stage's records as msgspec structs (``pipeline/context_state.py``): the same
fields, defaults and JSON as the public models of ``schemas/context.py`` that subscribers
of ``customer.context`` read. A context folded from every channel is checked the same way
in tests/unit/test_context_merge.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

from pipeline import context_state as stored
from pipeline import identity_state as identity_records
from pipeline import ops
from pipeline.ops import AbsorbOp, RestoreOp, customer_ops, encode_op
from schemas import context as public
from schemas import events
from tests import context_samples as samples

PAIRS: list[tuple[type[msgspec.Struct], type[BaseModel]]] = [
    (identity_records.Identifier, events.Identifier),
    (stored.Sighting, public.Sighting),
    (stored.TraitValue, public.TraitValue),
    (stored.Consent, public.Consent),
    (stored.TimelineEntry, public.TimelineEntry),
    (stored.Message, public.Message),
    (stored.PageView, public.PageView),
    (stored.ProductActivity, public.ProductActivity),
    (stored.Interaction, public.Interaction),
    (stored.Archived, public.Archived),
    (stored.OpenConversation, public.OpenConversation),
    (stored.AgentRef, public.AgentRef),
    (stored.RepeatContact, public.RepeatContact),
    (stored.SelfServiceAttempt, public.SelfServiceAttempt),
    (stored.Routing, public.Routing),
    (stored.PendingTrigger, public.PendingTrigger),
    (stored.CustomerContext, public.CustomerContext),
    (stored.Event, events.RawEvent),  # an event as the context stage folds it
]


def test_every_public_context_model_has_a_struct() -> None:
    models = {
        m
        for m in vars(public).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == public.__name__
    }
    mirrored = {theirs for _, theirs in PAIRS}
    # the two records the context stage does not keep: they are published as they are made
    assert models - mirrored == {public.EngagementTrigger, public.RoutingHint, public._Model}


@pytest.mark.parametrize(("mine", "theirs"), PAIRS, ids=lambda t: t.__name__)
def test_a_struct_has_its_models_fields_in_their_order(
    mine: type[msgspec.Struct], theirs: type[BaseModel]
) -> None:
    assert mine.__struct_fields__ == tuple(theirs.model_fields)


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return msgspec.to_builtins(value)


@pytest.mark.parametrize(("mine", "theirs"), PAIRS, ids=lambda t: t.__name__)
def test_a_struct_has_its_models_defaults(
    mine: type[msgspec.Struct], theirs: type[BaseModel]
) -> None:
    info = {f.name: f for f in msgspec.structs.fields(mine)}
    for name, field in theirs.model_fields.items():
        own = info[name]
        if field.is_required():
            assert own.required, name
            continue
        assert not own.required, name
        mine_is = own.default if own.default_factory is msgspec.NODEFAULT else own.default_factory()
        theirs_is = field.get_default(call_default_factory=True)
        assert _json(mine_is) == _json(theirs_is), name


def _published_by_pydantic() -> list[public.CustomerContext]:
    """Contexts as the pydantic models wrote them: routing, traits, interactions."""
    return [samples.context(), samples.repeat_caller(), samples.vip_spanish_speaker()]


@pytest.mark.parametrize("ctx", _published_by_pydantic(), ids=lambda c: c.customer_id)
def test_a_row_written_by_the_public_model_reads_back_and_writes_the_same_bytes(
    ctx: public.CustomerContext,
) -> None:
    raw = ctx.model_dump_json().encode()
    assert stored.encode(stored.decode(raw)) == raw
    assert stored.to_public(stored.decode(raw)) == ctx
    assert stored.from_public(ctx) == stored.decode(raw)
    assert stored.to_builtins(stored.decode(raw)) == ctx.model_dump(mode="json")


def test_a_timestamp_is_written_as_pydantic_writes_it() -> None:
    at = datetime(2026, 3, 2, 9, 0, 0, 120000, tzinfo=UTC)
    offset = datetime(2026, 3, 2, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    ctx = stored.CustomerContext(customer_id="c", first_seen=at, last_seen=offset)
    expected = public.CustomerContext(customer_id="c", first_seen=at, last_seen=offset)
    assert stored.encode(ctx) == expected.model_dump_json().encode()


def test_a_row_with_an_unknown_field_is_refused_as_the_model_refuses_it() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        stored.decode(b'{"customer_id":"c","surprise":1}')


def test_ops_carry_a_context_as_its_own_json() -> None:
    ctx = stored.from_public(samples.repeat_caller())
    for op in (
        AbsorbOp(customer_id="cus_2", context=ctx, decided_at=7),
        RestoreOp(customer_id="cus_3", context=ctx, decided_at=8),
    ):
        wire = encode_op(op)
        body = msgspec.json.decode(wire)
        assert body["context"] == msgspec.json.decode(stored.encode(ctx))
        [back] = customer_ops(wire)
        assert back == op
        assert isinstance(back.context, stored.CustomerContext)


def _structs_of(module: Any) -> list[type[msgspec.Struct]]:
    return [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == module.__name__
    ]


#: Every record the stages keep or pass between them (the ops' private base included).
RECORDS = [*_structs_of(stored), *_structs_of(identity_records), *_structs_of(ops)]


def test_the_records_checked_include_each_kind() -> None:
    assert {stored.CustomerContext, identity_records.CustomerNode, ops.AbsorbOp} <= set(RECORDS)


@pytest.mark.parametrize("record", RECORDS, ids=lambda t: t.__name__)
def test_no_stored_record_is_tracked_by_the_cycle_collector(record: type[msgspec.Struct]) -> None:
    """A record is a tree (no cycles): the collector need not walk the parsed contexts and
    nodes the stages cache (pipeline/context_state.py says what it saved)."""
    assert record.__struct_config__.gc is False, record.__name__


def _with_value(module: Any, value: Any) -> Any:
    """A context (of ``module``'s models) holding ``value`` as a string and a trait."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    trait = module.TraitValue(value=value, event_id="e", channel=events.Channel.WEB, observed_at=at)
    return module.CustomerContext(customer_id=str(value), traits={"t": trait})


@pytest.mark.parametrize("text", ["Zoë 😀", "\x00\x1f\x7f", '\u2028 "q" \\ </script>'])
def test_text_is_written_as_pydantic_writes_it(text: str) -> None:
    assert stored.encode(_with_value(stored, text)) == (
        _with_value(public, text).model_dump_json().encode()
    )


@pytest.mark.parametrize("number", [0.30000000000000004, 1e-7, 123456789.125, -0.0, 2.0, 1e22])
def test_a_number_reads_back_as_the_same_number(number: float) -> None:
    """The same bytes, but for one spelling: a float of 1e16 or more is written ``1e22``
    where pydantic writes ``1e+22`` (both JSON, the same number to any reader)."""
    mine = stored.encode(_with_value(stored, number))
    theirs = _with_value(public, number).model_dump_json().encode()
    assert json.loads(mine) == json.loads(theirs)
    assert (mine == theirs) is (abs(number) < 1e16)
