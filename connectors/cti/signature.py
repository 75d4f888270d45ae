"""The CTI endpoint's request signature: timestamped HMAC-SHA256 of the body. Pure.

The platform sends ``X-Omnistitch-Timestamp: <unix seconds>`` and
``X-Omnistitch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``.
Signing the timestamp with the body lets the connector refuse a captured request
replayed later: a signature older (or newer) than the tolerance is stale.
"""

from __future__ import annotations

from connectors.errors import SignatureInvalid
from connectors.signing import hex_hmac_sha256, hex_matches

TIMESTAMP_HEADER = "X-Omnistitch-Timestamp"
SIGNATURE_HEADER = "X-Omnistitch-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Omnistitch-Signature`` value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hex_hmac_sha256(secret, f"{timestamp}.".encode() + body)


def check(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance_s: float,
) -> None:
    """Raise :class:`SignatureInvalid` unless the signature is valid and fresh."""
    if not timestamp or not timestamp.strip().isdigit() or len(timestamp.strip()) > 12:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds", TIMESTAMP_HEADER)
    sent = int(timestamp.strip())
    scheme, _, digest = (signature or "").strip().partition("=")
    expected = hex_hmac_sha256(secret, f"{sent}.".encode() + body)
    if scheme.lower() != "sha256" or not hex_matches(expected, digest):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match", SIGNATURE_HEADER)
    if abs(now - sent) > tolerance_s:
        raise SignatureInvalid(
            f"stale signature: {TIMESTAMP_HEADER} is {now - sent:.0f}s off", TIMESTAMP_HEADER
        )
