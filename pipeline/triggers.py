"""Proactive-engagement triggers: which ones are due for a customer now. Pure logic.

``repeat_contact`` fires as soon as the context shows one; the delayed rules
(``checkout_abandoned``, ``dropped_call_no_callback``) wait in ``pending_triggers``
(derived by :func:`pipeline.context.derive`) until their deadline, and are dropped if the
condition clears first (the order completes, a call is answered). Triggers carry only the
channels the customer can be reached on and has not opted out of; with none left, the
trigger is not emitted. Each trigger id is deterministic and recorded in
``fired_triggers``, so a trigger fires once even when the pipeline re-processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pipeline.context import derive, trigger_id
from pipeline.context_policy import ContextPolicy
from pipeline.context_state import CustomerContext, replace
from schemas.context import EngagementTrigger

REASONS = {
    "checkout_abandoned": "checkout started and not completed within {m:g} minutes",
    "dropped_call_no_callback": "call dropped and no answered call within {m:g} minutes",
    "repeat_contact": "contacted again {h:g} h after the previous contact",
}


def due_triggers(
    ctx: CustomerContext, now: datetime, policy: ContextPolicy
) -> tuple[list[EngagementTrigger], CustomerContext | None]:
    """The triggers to emit now, and the context with them recorded (None: unchanged)."""
    rules = policy.triggers
    fired = list(ctx.fired_triggers)
    decided: list[str] = []
    out: list[EngagementTrigger] = []
    too_late = timedelta(minutes=rules.max_delay_minutes)
    candidates: list[tuple[str, str, datetime, str]] = []
    repeat = ctx.routing.repeat_contact
    if rules.repeat_contact and repeat is not None:
        reason = REASONS["repeat_contact"].format(h=repeat.hours_since_previous)
        candidates.append(("repeat_contact", repeat.interaction_id, repeat.at, reason))
    for p in ctx.pending_triggers:
        if p.due_at <= now:
            minutes = (
                rules.checkout_abandoned_minutes
                if p.rule == "checkout_abandoned"
                else rules.dropped_call_minutes
            )
            candidates.append(
                (p.rule, p.interaction_id, p.due_at, REASONS[p.rule].format(m=minutes))
            )
    for rule, interaction, at, reason in candidates:
        tid = trigger_id(rule, interaction)
        if tid in fired or tid in decided:
            continue
        decided.append(tid)
        channels = ctx.routing.contactable_channels
        if now - at > too_late or not channels:
            continue  # stale (a replay of old history) or nowhere allowed: decided, not sent
        out.append(
            EngagementTrigger(
                trigger_id=tid,
                rule=rule,
                customer_id=ctx.customer_id,
                interaction_id=interaction,
                channels=list(channels),
                reason=reason,
                occurred_at=at,
                context_version=ctx.version,
            )
        )
    if not decided:
        return [], None
    updated = replace(ctx, fired_triggers=[*fired, *decided][-policy.fired_trigger_limit :])
    return out, derive(updated, policy)


def next_due(ctx: CustomerContext) -> datetime | None:
    """When this customer's earliest pending trigger falls due."""
    return min((p.due_at for p in ctx.pending_triggers), default=None)
