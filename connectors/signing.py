"""Hex HMAC-SHA256 signing and constant-time checking, shared by the connectors. Pure."""

from __future__ import annotations

import hashlib
import hmac


def hex_hmac_sha256(secret: str, message: bytes) -> str:
    """``hex(HMAC-SHA256(secret, message))``."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def hex_matches(expected_hex: str, given: str | None) -> bool:
    """Constant-time comparison of a hex digest with a given one (any case, trimmed)."""
    if not given:
        return False
    return hmac.compare_digest(expected_hex.encode(), given.strip().lower().encode())
