"""Why a connector refuses input. No imports: pure mapping modules raise these too."""

from __future__ import annotations

from collections.abc import Mapping


class Rejected(Exception):
    """A request the connector refuses; becomes a 4xx with a JSON body naming the field."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def invalid(field: str, message: str) -> Rejected:
    """400 ``invalid_request`` naming ``field`` (a dotted path such as ``entry.0.changes``)."""
    return Rejected(400, "invalid_request", message, field)


class SignatureInvalid(Rejected):
    """The request is not signed by whom it claims (forged, wrong secret, changed body): 403."""

    def __init__(self, message: str, field: str = "signature") -> None:
        super().__init__(403, "signature", message, field)
