"""Identity rules: per identifier type, how it is normalised, trusted, limited and blocked.

Loaded from a TOML file (``OMNISTITCH_RULES_FILE``) and validated at start-up; a bad file
stops the worker with a message naming the offending key. Without a file the defaults
below apply. Pure data and functions: no I/O beyond reading the file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

IDENTIFIER_TYPE = r"^[a-z][a-z0-9_]{0,31}$"


class Trust(StrEnum):
    """Verified identifiers were proved by the channel (a login, a signed webhook)."""

    VERIFIED = "verified"
    UNVERIFIED = "unverified"


Normaliser = Literal["email", "phone", "handle", "lower", "verbatim"]


class TypeRule(BaseModel):
    """How one identifier type behaves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    normaliser: Normaliser = "verbatim"
    limit: int | None = Field(
        default=None, ge=1, description="Most values of this type one customer may hold."
    )
    limit_window_days: float | None = Field(
        default=None, gt=0, description="Count only values seen within this many days."
    )
    priority: int = Field(
        default=50, ge=1, le=1000, description="1 is the strongest; the weakest is dropped first."
    )
    trust: Trust = Trust.UNVERIFIED
    merge: bool = Field(default=True, description="May this type join two known customers?")
    blocked: list[str] = Field(default_factory=list, description="Literal values, any case.")
    blocked_patterns: list[str] = Field(default_factory=list, description="Regexes (search).")

    @field_validator("blocked_patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
        return patterns

    @cached_property
    def _blocked_literals(self) -> frozenset[str]:
        return frozenset(v.casefold() for v in self.blocked)

    @cached_property
    def _blocked_regexes(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p, re.IGNORECASE) for p in self.blocked_patterns)

    def blocks(self, value: str) -> str | None:
        """The reason ``value`` (already normalised) is blocked, or None."""
        if value.casefold() in self._blocked_literals:
            return f"blocked value {value!r}"
        for regex in self._blocked_regexes:
            if regex.search(value):
                return f"blocked by pattern {regex.pattern!r}"
        return None


class HubRule(BaseModel):
    """Quarantine of identifiers shared by too many customers (a shop's phone, a test email)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_customers: int = Field(default=3, ge=2, description="More distinct customers: a hub.")
    window_days: float = Field(default=30.0, gt=0)


#: Placeholders that senders use for "unknown", blocked for every type.
GLOBAL_BLOCKED = [
    "null",
    "none",
    "nil",
    "undefined",
    "anonymous",
    "unknown",
    "n/a",
    "na",
    "-",
    "test",
    "test@test.com",
    "test@example.com",
    "noreply@example.com",
]
GLOBAL_BLOCKED_PATTERNS = [r"^[0\-\s+]*$", r"^(.)\1{5,}$"]


def _default_types() -> dict[str, TypeRule]:
    verified = Trust.VERIFIED
    return {
        "user_id": TypeRule(limit=1, priority=1, trust=verified),
        "account_id": TypeRule(limit=1, priority=2, trust=verified),
        "crm_id": TypeRule(limit=1, priority=3, trust=verified),
        "email": TypeRule(normaliser="email", limit=5, priority=10),
        "phone": TypeRule(normaliser="phone", limit=5, priority=11),
        "whatsapp": TypeRule(normaliser="phone", limit=3, priority=12),
        "messenger_psid": TypeRule(limit=3, priority=13),
        "instagram": TypeRule(normaliser="handle", limit=3, priority=14),
        "x": TypeRule(normaliser="handle", limit=3, priority=15),
        "device_id": TypeRule(limit=20, priority=30),
        "anonymous_id": TypeRule(limit=50, priority=31),
        "cookie": TypeRule(limit=50, priority=32),
    }


class Rules(BaseModel):
    """The whole rule set. ``version`` is recorded with every link it decides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(default="builtin-1", min_length=1, max_length=64)
    default_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    unknown_types: Literal["reject", "verbatim"] = Field(
        default="reject", description="What to do with identifier types not configured here."
    )
    hub: HubRule = Field(default_factory=HubRule)
    blocked: list[str] = Field(default_factory=lambda: list(GLOBAL_BLOCKED))
    blocked_patterns: list[str] = Field(default_factory=lambda: list(GLOBAL_BLOCKED_PATTERNS))
    types: dict[str, TypeRule] = Field(default_factory=_default_types)

    @field_validator("types")
    @classmethod
    def _check_names(cls, types: dict[str, TypeRule]) -> dict[str, TypeRule]:
        for name in types:
            if not re.match(IDENTIFIER_TYPE, name):
                raise ValueError(f"identifier type {name!r} must match {IDENTIFIER_TYPE}")
        return {**_default_types(), **types}

    @cached_property
    def _global(self) -> TypeRule:
        return TypeRule(blocked=self.blocked, blocked_patterns=self.blocked_patterns)

    def rule(self, id_type: str) -> TypeRule | None:
        """The rule of a type; None for an unknown type when unknown types are rejected."""
        found = self.types.get(id_type)
        if found is None and self.unknown_types == "verbatim":
            return TypeRule()
        return found

    def blocks(self, id_type: str, value: str) -> str | None:
        """Why a normalised value is blocked (globally or for its type), or None."""
        rule = self.types.get(id_type)
        return self._global.blocks(value) or (rule.blocks(value) if rule else None)


class RulesError(ValueError):
    """The rules file is unreadable or invalid; the message names the key."""


def load_rules(path: Path | None) -> Rules:
    """Read and validate a rules file; the defaults when ``path`` is None."""
    if path is None:
        return Rules()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: {exc}") from None
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        ]
        raise RulesError(f"{path}: invalid identity rules:\n" + "\n".join(lines)) from None


def suppression_hash(identifier_key: str) -> str:
    """How an erased identifier is remembered: a hash, never the value itself."""
    return hashlib.sha256(b"omnistitch-erasure\0" + identifier_key.encode()).hexdigest()
