"""Routing hints from a customer context: the pure logic of the example routing consumer.

A downstream service needs nothing but the ``customer.context`` view to route a contact;
this module is that decision, with no Kafka in it (the wiring is
:mod:`omnistitch.routing_consumer`). :func:`hint_for` reads ``ctx.routing`` and
``ctx.interactions`` and applies these rules:

* **preferred agent**: the agent of the customer's last agent contact
  (``routing.last_agent.agent_id``), so the customer can get the same person again;
* **priority** ``high`` when any of these holds, each adding its reason in this order,
  else ``normal`` with no reason:

  - ``repeat_contact``: the customer came back within the repeat window
    (``routing.repeat_contact``),
  - ``vip``: ``routing.vip``,
  - ``unresolved_self_service``: a self-service attempt that did not resolve
    (``routing.unresolved_self_service``);
* **language**: ``routing.language``;
* **suggested queue**, the first that applies: the policy's queue for the customer's
  language (``es`` -> ``support-es``; a regional tag such as ``es-MX`` matches ``es``),
  else the queue of the most recent interaction that had one (``interactions`` is newest
  first), else the policy's default queue (which may be None: no suggestion);
* **open conversation channels**: the channels of ``routing.open_conversations``, each
  once, in the order listed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas.context import CustomerContext, Interaction, RoutingHint

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class RoutingPolicy:
    """Where contacts go when the context does not say: a language's queue, or a default.

    Immutable. Language codes are ISO 639 primary subtags (``es``, not ``es-MX``), kept in
    lower case; a malformed code, a code mapped twice or an empty queue raise ValueError.
    """

    default_queue: str | None = None
    language_queues: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default_queue is not None and not self.default_queue.strip():
            raise ValueError("the default queue is empty")
        checked: dict[str, str] = {}
        for language, queue in self.language_queues.items():
            code = language.strip().lower()
            if not _LANGUAGE.match(code):
                raise ValueError(f"not an ISO 639 language code: {language!r}")
            if code in checked:
                raise ValueError(f"language {code!r} mapped twice")
            if not queue.strip():
                raise ValueError(f"empty queue for language {code!r}")
            checked[code] = queue.strip()
        object.__setattr__(self, "language_queues", MappingProxyType(checked))

    def queue_for_language(self, language: str | None) -> str | None:
        """The configured queue for ``language`` (or its primary subtag), if any."""
        if not language:
            return None
        primary = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
        return self.language_queues.get(primary)


def _latest_queue(interactions: list[Interaction]) -> str | None:
    return next((i.queue for i in interactions if i.queue), None)


def hint_for(ctx: CustomerContext, policy: RoutingPolicy) -> RoutingHint:
    """The routing hint for one customer's context (see the module docstring's rules)."""
    routing = ctx.routing
    reasons = [
        reason
        for reason, applies in (
            ("repeat_contact", routing.repeat_contact is not None),
            ("vip", routing.vip),
            ("unresolved_self_service", routing.unresolved_self_service is not None),
        )
        if applies
    ]
    queue = (
        policy.queue_for_language(routing.language)
        or _latest_queue(ctx.interactions)
        or policy.default_queue
    )
    channels = list(dict.fromkeys(c.channel.value for c in routing.open_conversations))
    return RoutingHint(
        customer_id=ctx.customer_id,
        priority="high" if reasons else "normal",
        reasons=reasons,
        preferred_agent_id=routing.last_agent.agent_id if routing.last_agent else None,
        language=routing.language,
        suggested_queue=queue,
        open_conversation_channels=channels,
        context_version=ctx.version,
    )
