"""The identity tables' records as msgspec structs (``pipeline/identity_state.py``): the
same JSON as the pydantic models that wrote the rows before, and the same fields as the
public models the query API serves."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from pydantic import BaseModel, TypeAdapter

from pipeline.identity_state import (
    AnyIdentifier,
    CustomerNode,
    Evidence,
    HubState,
    Identifier,
    IdentifierState,
    Link,
    RejectedLink,
    decode_hub,
    decode_node,
    encode,
    to_public,
)
from pipeline.ops import ResolveRequest, identity_requests
from schemas import events
from schemas import identity as public
from schemas.events import Channel

AT = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
EVIDENCE = public.Evidence(
    event_id="evt-1",
    channel=Channel.CHAT,
    source="webchat",
    occurred_at=AT,
    topic="raw.events",
    partition=3,
    offset=42,
    rule_version="v7",
)


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [(Evidence, public.Evidence), (Link, public.Link), (RejectedLink, public.RejectedLink)],
)
def test_stored_links_have_the_public_models_fields_in_their_order(
    mine: type[msgspec.Struct], theirs: type[BaseModel]
) -> None:
    assert mine.__struct_fields__ == tuple(theirs.model_fields)


def _pydantic_node_json() -> bytes:
    """A node row as the pydantic ``CustomerNode`` wrote it (before the structs): its
    links and rejected links are the public models, dumped by pydantic."""
    link = public.Link(
        link_id="evt-1", identifiers=["email:a@x.com"], created="cus_1", evidence=EVIDENCE
    )
    rejected = public.RejectedLink(
        identifier="email:b@x.com",
        reason="limit",
        detail="would give the customer more than 1 email value(s)",
        other_customer="cus_2",
        evidence=EVIDENCE,
    )
    return b"".join(
        (
            b'{"customer_id":"cus_1","identifiers":{"email:a@x.com":{"verified":true,',
            b'"first_seen":"2026-03-01T09:30:15.123456Z","last_seen":"2026-03-01T10:00:00Z"}},',
            b'"links":[',
            link.model_dump_json().encode(),
            b'],"rejected":[',
            rejected.model_dump_json().encode(),
            b'],"hubs":["phone:+15550100"]}',
        )
    )


def test_a_row_written_by_the_pydantic_models_reads_back_and_writes_the_same_bytes() -> None:
    raw = _pydantic_node_json()
    node = decode_node(raw)
    assert node.identifiers["email:a@x.com"] == IdentifierState(
        verified=True, first_seen=AT, last_seen=datetime(2026, 3, 1, 10, tzinfo=UTC)
    )
    assert node.links[0].evidence == Evidence.of(EVIDENCE)
    assert node.rejected[0].reason == "limit"
    assert node.member_ids() == {"cus_1"}
    assert node.has_verified()
    assert encode(node) == raw


def test_links_convert_to_the_public_models_the_api_serves() -> None:
    node = decode_node(_pydantic_node_json())
    links = to_public(public.Link, node.links)
    rejected = to_public(public.RejectedLink, node.rejected)
    assert links[0].evidence == EVIDENCE
    assert links[0].model_dump_json().encode() == msgspec.json.encode(node.links[0])
    assert rejected[0].other_customer == "cus_2"


def test_hub_state_round_trips() -> None:
    hub = HubState(sightings={"cus_1": AT, "cus_2": AT}, quarantined_at=AT)
    assert decode_hub(encode(hub)) == hub
    assert decode_hub(b"{}") == HubState()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"customer_id":"cus_1","surprise":1}',  # unknown field, as extra=forbid refused
        b'{"identifiers":{}}',  # no customer id
        b'{"customer_id":"cus_1","identifiers":{"k":{"verified":"yes"}}}',  # wrong type
    ],
)
def test_a_malformed_row_is_refused(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_node(raw)


def test_a_new_node_encodes_its_defaults() -> None:
    assert encode(CustomerNode(customer_id="cus_9")) == (
        b'{"customer_id":"cus_9","identifiers":{},"links":[],"rejected":[],"hubs":[]}'
    )


def test_evidence_converts_both_ways_without_loss() -> None:
    stored = Evidence.of(EVIDENCE)
    assert Evidence.of(stored) is stored
    assert stored.public() == EVIDENCE
    assert msgspec.json.encode(stored) == EVIDENCE.model_dump_json().encode()


def test_a_request_written_with_the_pydantic_evidence_decodes_to_the_struct() -> None:
    """Identity-log records appended before the evidence became a struct still read."""
    event = b'{"event_id":"evt-1","channel":"chat","source":"webchat","kind":"message"}'
    old = b"".join(
        (
            b'{"op":"resolve","evidence":',
            EVIDENCE.model_dump_json().encode(),
            b',"identifiers":[{"type":"email","value":"a@x.com","verified":false}],"event":',
            event,
            b"}",
        )
    )
    (request,) = identity_requests(old)
    assert isinstance(request, ResolveRequest)
    assert request.evidence == Evidence.of(EVIDENCE)
    assert request.event == event
    assert request.encode() == old


def test_identifiers_travel_as_structs_in_the_json_pydantic_wrote() -> None:
    """A request's identifiers (pydantic from ingest's normaliser, or structs) are written
    as the public model writes them and read back as structs with the same keys."""
    given: list[AnyIdentifier] = [
        events.Identifier(type="email", value="a@x.com"),
        Identifier(type="phone", value="+14155550100", verified=True),
    ]
    as_pydantic = [
        events.Identifier(type=i.type, value=i.value, verified=i.verified) for i in given
    ]
    event = events.RawEvent(
        event_id="evt-1",
        channel=Channel.CHAT,
        source="webchat",
        kind="message",
        occurred_at=AT,
        received_at=AT,
    )
    wire = ResolveRequest.of(event, given, EVIDENCE).encode()
    assert TypeAdapter(list[events.Identifier]).dump_json(as_pydantic) in wire
    (request,) = identity_requests(wire)
    assert isinstance(request, ResolveRequest)
    assert all(isinstance(i, Identifier) for i in request.identifiers)
    assert [i.key for i in request.identifiers] == ["email:a@x.com", "phone:+14155550100"]
    assert [i.verified for i in request.identifiers] == [False, True]
