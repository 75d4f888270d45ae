"""Twilio's webhook signature (``X-Twilio-Signature``). Pure: hmac and base64 only.

Twilio signs the full URL it requested (scheme, host, path, query) followed by every POST
parameter, sorted by name, as ``name`` + ``value``; HMAC-SHA1 with the account's Auth
Token, base64. Webhooks signed with a SharedKey name their algorithm (``HMAC_SHA256``) in
``X-Twilio-Webhooks-Signature-Settings``. Because Twilio is inconsistent about the port,
a signature is accepted for the URL with or without its default port (as Twilio's own
``RequestValidator`` does).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
_HASHES = {HMAC_SHA1: "sha1", HMAC_SHA256: "sha256"}


def algorithm(settings_header: str | None) -> str:
    """The algorithm named by ``X-Twilio-Webhooks-Signature-Settings``; HMAC_SHA1 without."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def compute(token: str, url: str, params: Sequence[tuple[str, str]], alg: str = HMAC_SHA1) -> str:
    """The signature Twilio sends for ``url`` and POST ``params``."""
    digest = _HASHES.get(alg)
    if digest is None:
        raise ValueError(f"unsupported signature algorithm {alg!r}")
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    mac = hmac.new(token.encode(), text.encode(), digest)
    return base64.b64encode(mac.digest()).decode()


def is_valid(
    token: str,
    url: str,
    params: Sequence[tuple[str, str]],
    signature: str | None,
    alg: str = HMAC_SHA1,
) -> bool:
    """True when ``signature`` signs ``url`` (with or without its port) and ``params``."""
    if not signature or alg not in _HASHES:
        return False
    given = signature.strip().encode()
    return any(
        hmac.compare_digest(compute(token, candidate, params, alg).encode(), given)
        for candidate in _url_variants(url)
    )


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    without = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    return [without, with_port]
