"""How customer contexts are folded: bounds, grouping windows, trait rules, trigger rules.

Loaded from TOML (``OMNISTITCH_CONTEXT_FILE``; see ``deploy/context-policy.example.toml``)
and validated at start-up: an unknown key, a wrong type or an impossible bound stops the
worker with the offending field named, rather than folding contexts with a guess.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.context import TraitRule


class ContextPolicyError(ValueError):
    """The context policy file cannot be read or is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraitPolicy(_Strict):
    """How one trait is reconciled when events disagree."""

    rule: TraitRule = "most_recent"
    source_priority: list[str] = Field(
        default_factory=list,
        description="source_priority: sources or channels, most trusted first; "
        "unlisted ones rank below, and ties go to the most recent value.",
    )


class TriggerPolicy(_Strict):
    """Proactive-engagement rules; a delay of 0 turns its rule off."""

    checkout_abandoned_minutes: float = Field(default=30.0, ge=0)
    dropped_call_minutes: float = Field(default=15.0, ge=0)
    repeat_contact: bool = True
    max_delay_minutes: float = Field(
        default=24 * 60.0,
        gt=0,
        description="A delayed trigger this far past its deadline is dropped, not fired "
        "(replaying old history must not message customers about last month).",
    )


def _default_traits() -> dict[str, TraitPolicy]:
    return {
        "name": TraitPolicy(
            rule="source_priority", source_priority=["cti", "tracking", "webchat", "email"]
        ),
        "language": TraitPolicy(rule="most_recent"),
        "city": TraitPolicy(rule="most_frequent"),
    }


class ContextPolicy(_Strict):
    """Every knob of the context merge, with production defaults."""

    timeline_limit: int = Field(default=200, ge=1, le=100_000)
    window_days: float = Field(default=90.0, gt=0, description="Timeline/interaction window.")
    interaction_limit: int = Field(default=50, ge=1, le=10_000)
    items_per_interaction: int = Field(
        default=100, ge=1, le=10_000, description="Messages or pages kept per interaction."
    )
    text_limit: int = Field(default=2_000, ge=16, description="Characters kept per message.")
    visit_gap_minutes: float = Field(default=30.0, gt=0, description="Web/app session gap.")
    conversation_gap_hours: float = Field(
        default=24.0, gt=0, description="SMS/WhatsApp/Messenger: a new thread after this."
    )
    repeat_contact_hours: float = Field(default=48.0, gt=0)
    self_service_minutes: float = Field(
        default=60.0, gt=0, description="An unresolved attempt this close before a contact."
    )
    fired_trigger_limit: int = Field(default=50, ge=1)
    vip_tiers: list[str] = Field(default_factory=lambda: ["vip", "gold", "platinum"])
    default_trait: TraitPolicy = Field(default_factory=TraitPolicy)
    traits: dict[str, TraitPolicy] = Field(default_factory=_default_traits)
    triggers: TriggerPolicy = Field(default_factory=TriggerPolicy)

    def trait(self, name: str) -> TraitPolicy:
        return self.traits.get(name, self.default_trait)


def load_context_policy(path: Path | None, **overrides: object) -> ContextPolicy:
    """The policy in ``path`` (TOML), or the defaults; ``overrides`` win over both."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ContextPolicyError(f"{path}: {exc}") from exc
    data |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return ContextPolicy.model_validate(data)
    except ValidationError as exc:
        where = path or "context policy"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ContextPolicyError(f"{where}: {problems}") from None
