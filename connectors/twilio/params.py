"""Reading Twilio's form parameters: required fields and addresses. Pure.

Twilio sends ``application/x-www-form-urlencoded`` bodies with CamelCase names
(``MessageSid``, ``From``, ``CallStatus`` ...). An address is a phone number in E.164
(``+14155550100``), a WhatsApp sender (``whatsapp:+14155550100``), or a Voice SDK client
(``client:alice``) or SIP URI, which are not phone numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.errors import invalid

SOURCE = "twilio"
_MAX_VALUE = 512


class Params:
    """The first value of each parameter, with typed access that 400s naming the field."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._first: dict[str, str] = {}
        for name, value in pairs:
            self._first.setdefault(name, value)

    def get(self, name: str) -> str | None:
        """The value, stripped; None when absent or blank."""
        value = self._first.get(name, "").strip()
        return value or None

    def raw(self, name: str) -> str | None:
        """The value verbatim (not stripped); None when absent."""
        return self._first.get(name)

    def require(self, name: str) -> str:
        """The value, or 400 naming ``name``."""
        value = self.get(name)
        if value is None:
            raise invalid(name, "Field required")
        if len(value) > _MAX_VALUE:
            raise invalid(name, f"longer than {_MAX_VALUE} characters")
        return value

    def payload(self) -> dict[str, Any]:
        """The parameters verbatim; a repeated name keeps all its values as a list."""
        out: dict[str, Any] = {}
        for name, value in self.pairs:
            if name in out:
                prior = out[name]
                out[name] = [*prior, value] if isinstance(prior, list) else [prior, value]
            else:
                out[name] = value
        return out


def address_identifiers(address: str | None) -> list[tuple[str, object]]:
    """Identifier candidates of one Twilio address: a phone, a WhatsApp number, or nothing."""
    if address is None:
        return []
    scheme, sep, rest = address.partition(":")
    if not sep:
        return [("phone", address)] if _looks_like_phone(address) else []
    if scheme.lower() == "whatsapp" and _looks_like_phone(rest):
        return [("whatsapp", rest), ("phone", rest)]
    return []  # client:..., sip:..., messenger:...: not a phone number


def is_whatsapp(address: str | None) -> bool:
    """True for a ``whatsapp:`` address (Twilio's WhatsApp senders)."""
    return address is not None and address.lower().startswith("whatsapp:")


def _looks_like_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    return 5 <= digits <= 20 and all(c.isdigit() or c in "+-() ." for c in value)
