"""Security settings mapped to confluent-kafka's and faust's client configuration."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import faust
import pytest

from omnistitch.kafka_client import client_config, faust_credentials
from omnistitch.settings import KafkaSettings, SettingsError, load

CA = Path(certifi.where())


def settings(**kw: object) -> KafkaSettings:
    return KafkaSettings.model_validate({"bootstrap_servers": "k1:9092,k2:9092", **kw})


def test_plaintext_by_default() -> None:
    s = settings()
    assert client_config(s) == {
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "plaintext",
    }
    assert faust_credentials(s) is None


def test_sasl_scram_over_tls() -> None:
    s = settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="stitch",
        sasl_password="s3cret",
        ssl_ca_location=str(CA),
    )
    assert client_config(s, **{"group.id": "g"}) == {
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "stitch",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(CA),
        "group.id": "g",
    }
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("stitch", "s3cret")
    assert creds.mechanism.value == "SCRAM-SHA-256"
    assert creds.protocol.value == "SASL_SSL"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname


def test_sasl_without_tls_has_no_ssl_settings() -> None:
    s = settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    config = client_config(s)
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"  # the default mechanism
    assert "ssl.ca.location" not in config
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.ssl_context is None


def test_tls_only_trusts_the_given_ca_or_the_system_store() -> None:
    s = settings(security_protocol="SSL", ssl_ca_location=str(CA))
    assert client_config(s)["ssl.ca.location"] == str(CA)
    assert "sasl.username" not in client_config(s)
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED
    assert "ssl.ca.location" not in client_config(settings(security_protocol="SSL"))


def test_the_password_is_never_shown() -> None:
    s = settings(security_protocol="SASL_SSL", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_sasl_requires_credentials_and_a_known_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTITCH_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="OMNISTITCH_SASL_PASSWORD"):
        load(KafkaSettings)
    monkeypatch.setenv("OMNISTITCH_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(SettingsError, match="OMNISTITCH_SECURITY_PROTOCOL"):
        load(KafkaSettings)
    monkeypatch.setenv("OMNISTITCH_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("OMNISTITCH_SSL_CA_LOCATION", "/no/such/ca.pem")
    with pytest.raises(SettingsError, match="OMNISTITCH_SSL_CA_LOCATION"):
        load(KafkaSettings)
