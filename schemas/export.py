"""Export the wire models' JSON Schemas to ``schemas/json/`` (``omnistitch schemas export``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.context import CustomerContext, EngagementTrigger, RoutingHint
from schemas.cti import CtiBatch, CtiEvent
from schemas.events import RawEvent
from schemas.identity import IdentityView, Merge, Split

JSON_DIR = Path(__file__).resolve().parent / "json"

#: file name -> model; the file names are part of the public contract.
EXPORTED: dict[str, type[BaseModel]] = {
    "raw_event.v1.schema.json": RawEvent,
    "customer_context.v1.schema.json": CustomerContext,
    "engagement_trigger.v1.schema.json": EngagementTrigger,
    "routing_hint.v1.schema.json": RoutingHint,
    "identity_merge.v1.schema.json": Merge,
    "identity_split.v1.schema.json": Split,
    "identity_view.v1.schema.json": IdentityView,
    "cti_event.v1.schema.json": CtiEvent,
    "cti_batch.v1.schema.json": CtiBatch,
}


def render(model: type[BaseModel]) -> str:
    """The JSON Schema document of one model, as committed to the repository."""
    schema = model.model_json_schema(mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(check: bool = False, directory: Path = JSON_DIR) -> list[str]:
    """Write every schema that changed; return the names that were (or, with check, are) stale."""
    stale = []
    for name, model in EXPORTED.items():
        path = directory / name
        text = render(model)
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale
