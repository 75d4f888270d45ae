"""Proving a logged-in visitor's identity: HMAC-SHA256 of the visitor id, hex. Pure.

The site's backend, which knows who is logged in, computes
``identifier_hash = hex(HMAC-SHA256(key=site secret, msg=visitor id))`` and gives it to
the chat widget with the id (as Chatwoot's ``identifier_hash`` and Intercom's
``user_hash`` work). The widget cannot compute it, so a matching hash proves the id.
"""

from __future__ import annotations

from connectors.signing import hex_hmac_sha256, hex_matches


def identifier_hash(secret: str, visitor_id: str) -> str:
    """The hex HMAC-SHA256 of ``visitor_id`` under ``secret``."""
    return hex_hmac_sha256(secret, visitor_id.encode())


def is_proved(secret: str, visitor_id: str, given: str | None) -> bool:
    """True when ``given`` is the identifier hash of ``visitor_id`` (case-insensitive hex)."""
    return hex_matches(identifier_hash(secret, visitor_id), given)
