"""One mapping from omnistitch's Kafka settings to each client library's configuration.

Every process talks to the same cluster with the same security settings
(``OMNISTITCH_SECURITY_PROTOCOL``, ``OMNISTITCH_SASL_*``, ``OMNISTITCH_SSL_CA_LOCATION``):

* :func:`client_config` for confluent-kafka (librdkafka) clients: topic creation, the
  connectors' publisher, the lag exporter and ``omnistitch dlq replay``;
* :func:`faust_credentials` for the faust worker (aiokafka underneath), passed to
  ``faust.App(broker_credentials=...)``.

Both are pure mappings of the settings; only :func:`faust_credentials` reads the CA file
(into an :class:`ssl.SSLContext`), because aiokafka takes a context, not a path.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from omnistitch.settings import KafkaSettings

if TYPE_CHECKING:
    from faust.auth import Credentials


def client_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """librdkafka properties: bootstrap servers and security, then ``overrides`` on top.

    Override keys use librdkafka's dotted names, passed as a dict:
    ``client_config(s, **{"group.id": "x"})``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.lower(),
    }
    if settings.security_protocol.startswith("SASL_"):
        password = settings.sasl_password
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = None if password is None else password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL") and settings.ssl_ca_location is not None:
        config["ssl.ca.location"] = str(settings.ssl_ca_location)
    config.update(overrides)
    return config


def durable_producer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """A producer whose acknowledged records are on every in-sync replica, once each
    (idempotent, ``acks=all``), batched for 5 ms and LZ4-compressed: the worker's own
    producers (the ingest stage's, the table writer's)."""
    return client_config(
        settings,
        **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            **overrides,
        },
    )


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """A verifying client TLS context trusting ``ssl_ca_location`` (else the system store)."""
    cafile = None if settings.ssl_ca_location is None else str(settings.ssl_ca_location)
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)


def faust_credentials(settings: KafkaSettings) -> Credentials | None:
    """faust's ``broker_credentials`` for the settings; None for PLAINTEXT."""
    import faust  # here: the connectors use this module and do not need faust

    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    password = settings.sasl_password
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=None if password is None else password.get_secret_value(),
        mechanism=settings.sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )
