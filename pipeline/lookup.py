"""What an agent types into a search box, turned into the identifier keys it could mean. Pure.

``GET /v1/lookup?q=`` accepts a phone number in any common spelling, an email address, a
social handle, or a typed key (``messenger_psid:123``, ``whatsapp:+1415...``,
``user_id:u1``). Each candidate is normalised by the identity rules' own normaliser
(:func:`pipeline.normalize.normalise_value`), so a lookup finds exactly what stitching
stored; the candidates come strongest first (rule priority), so the first one that
resolves is the most trustworthy reading of the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.normalize import DEFAULT_RULES, normalise_value, parse_identifier_key
from pipeline.rules import IDENTIFIER_TYPE, Rules

#: What a phone number typed by a person looks like: digits and the usual punctuation,
#: optionally an extension. Letters are refused so that ``user-1`` is never read as a
#: vanity number.
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{3,40}(\s*(ext\.?|x|#)\s*\d{1,6})?$", re.IGNORECASE)
_TYPE_PREFIX = re.compile(IDENTIFIER_TYPE.rstrip("$") + r":")
#: URI schemes an agent may paste from a CRM or an email client.
_SCHEMES = {"tel": "phone", "sms": "phone", "mailto": "email"}
MAX_QUERY_LENGTH = 320


class InvalidQuery(ValueError):
    """The query cannot mean any identifier; the message is fit for an HTTP 400."""


@dataclass(frozen=True)
class Candidates:
    """The identifier keys a query may mean, strongest first; ``typed`` if it named a type."""

    keys: tuple[str, ...]
    typed: bool


def candidates(query: str, rules: Rules = DEFAULT_RULES) -> Candidates:
    """Every identifier key ``query`` could be, normalised, strongest first, no duplicates.

    * ``type:value`` with a configured type (any case): that key first, then the same
      value under the other types sharing its normaliser (``whatsapp:+1...`` also tries
      ``phone:+1...``).
    * ``tel:``/``sms:``/``mailto:`` URIs: the phone or email they carry.
    * anything else: each configured type whose normaliser accepts the value, by priority
      (a formatted phone number only as the phone types, "@name" only as the handle types).

    Raises :class:`InvalidQuery` when nothing is left (empty, too long, a typed key whose
    value is invalid for its type, or a value no type accepts).
    """
    q = query.strip()
    if not q:
        raise InvalidQuery("q is empty: type a phone number, an email, a handle or type:value")
    if len(q) > MAX_QUERY_LENGTH:
        raise InvalidQuery(f"q is longer than {MAX_QUERY_LENGTH} characters")
    scheme, sep, rest = q.partition(":")
    scheme = scheme.strip().casefold()
    if sep and scheme in _SCHEMES:
        value = rest.strip().removeprefix("//").split("?", 1)[0]
        if not value:
            raise InvalidQuery(f"{q!r} has no {_SCHEMES[scheme]} after the scheme")
        return Candidates(_same_normaliser(rules, _SCHEMES[scheme], value, first=None), True)
    if sep and _TYPE_PREFIX.match(scheme + ":") and rules.rule(scheme) is not None:
        try:
            first = parse_identifier_key(f"{scheme}:{rest}", rules)
        except ValueError as exc:
            raise InvalidQuery(str(exc)) from None
        return Candidates(_same_normaliser(rules, scheme, first.value, first=first.key), True)
    keys: list[str] = []
    phone_like = bool(_PHONE_LIKE.match(q)) and sum(c.isdigit() for c in q) >= 3
    # "+1 (415) 555-0100" is a phone number, not someone's user id; bare digits may be
    # either (a Messenger PSID is digits). "@ann" is a handle.
    only = "phone" if phone_like and not q.isdigit() else "handle" if q[0] == "@" else None
    for id_type in _by_priority(rules):
        rule = rules.rule(id_type)
        assert rule is not None
        if (rule.normaliser == "phone" and not phone_like) or only not in (None, rule.normaliser):
            continue
        try:
            keys.append(f"{id_type}:{normalise_value(id_type, q, rules)}")
        except ValueError:
            continue
    if not keys:
        raise InvalidQuery(f"{q!r} is not a phone number, an email, a handle or a known id")
    return Candidates(tuple(dict.fromkeys(keys)), typed=False)


def _by_priority(rules: Rules) -> list[str]:
    return sorted(rules.types, key=lambda t: (rules.types[t].priority, t))


def _same_normaliser(rules: Rules, id_type: str, value: str, first: str | None) -> tuple[str, ...]:
    """``first``, then ``value`` under every type normalised like ``id_type`` (by priority)."""
    rule = rules.rule(id_type)
    assert rule is not None
    keys = [first] if first is not None else []
    if rule.normaliser in ("phone", "email", "handle"):
        for other in _by_priority(rules):
            other_rule = rules.rule(other)
            if other_rule is None or other_rule.normaliser != rule.normaliser:
                continue
            try:
                keys.append(f"{other}:{normalise_value(other, value, rules)}")
            except ValueError:
                continue
    if not keys:
        raise InvalidQuery(f"{value!r} is not a valid {id_type}")
    return tuple(dict.fromkeys(keys))
