"""The envelope of every Meta webhook notification: ``object`` and its ``entry`` list. Pure."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class Model(BaseModel):
    """Meta adds fields over time: keep what we do not know."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Change(Model):
    field: Id
    value: dict[str, Any]


class Entry(Model):
    id: Id
    time: int | None = None
    changes: list[Change] = Field(default_factory=list, max_length=1000)
    messaging: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


class Notification(Model):
    object: Id
    entry: Annotated[list[Entry], Field(max_length=1000)]


def wa_number(wa_id: str) -> str:
    """A WhatsApp id (the number without ``+``) as E.164."""
    wa_id = wa_id.strip()
    return wa_id if wa_id.startswith("+") else f"+{wa_id}"
