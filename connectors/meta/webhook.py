"""Meta's webhook protocol: the subscription handshake and ``X-Hub-Signature-256``. Pure.

* Handshake: Meta calls ``GET ?hub.mode=subscribe&hub.verify_token=<yours>&hub.challenge=<n>``
  and expects the challenge back, verbatim, when the token is the one you configured.
* Notifications: ``POST`` with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
  body, keyed with the app secret>``. The body must be checked as received, byte for
  byte (Meta escapes non-ASCII as ``\\uXXXX``; re-serialised JSON would not match).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from connectors.errors import SignatureInvalid, invalid
from connectors.signing import hex_hmac_sha256, hex_matches

SIGNATURE_HEADER = "X-Hub-Signature-256"


def challenge(query: Sequence[tuple[str, str]], verify_token: str) -> str:
    """The challenge to echo for a valid subscription request; 400 or 403 otherwise."""
    params = dict(query)
    mode = params.get("hub.mode")
    token = params.get("hub.verify_token")
    answer = params.get("hub.challenge")
    for name, value in (("hub.mode", mode), ("hub.verify_token", token), ("hub.challenge", answer)):
        if not value:
            raise invalid(name, "Field required")
    if mode != "subscribe":
        raise invalid("hub.mode", "expected 'subscribe'")
    assert token is not None
    assert answer is not None
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        raise SignatureInvalid("hub.verify_token does not match", "hub.verify_token")
    if len(answer) > 256:
        raise invalid("hub.challenge", "longer than 256 characters")
    return answer


def sign(app_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``body``."""
    return "sha256=" + hex_hmac_sha256(app_secret, body)


def check_signature(app_secret: str, body: bytes, header: str | None) -> None:
    """Raise :class:`SignatureInvalid` unless ``header`` signs ``body`` with ``app_secret``."""
    if not header:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} is missing", SIGNATURE_HEADER)
    scheme, _, digest = header.strip().partition("=")
    if scheme.lower() != "sha256" or not hex_matches(hex_hmac_sha256(app_secret, body), digest):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body", SIGNATURE_HEADER)
