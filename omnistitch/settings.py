"""Process settings, read from ``OMNISTITCH_*`` environment variables (or a ``.env`` file).

Each process validates its settings at start-up and refuses to run on a bad value, with a
message naming the variable. Every variable is listed, with its default, in README.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_TOPIC_PREFIX = re.compile(r"^([a-z0-9][a-z0-9._-]*\.)?$")


class SettingsError(RuntimeError):
    """Raised at start-up when a setting is missing or invalid."""


class KafkaSettings(BaseSettings):
    """Settings every process that talks to Kafka shares."""

    model_config = SettingsConfigDict(env_prefix="OMNISTITCH_", env_file=".env", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap host:port list."
    )
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name, e.g. 'prod.' (ends with a dot)."
    )
    raw_partitions: int = Field(default=8, ge=1, le=1024, description="Partitions of raw topics.")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or not all(_HOST_PORT.match(s) for s in servers):
            raise ValueError("expected a comma-separated list of host:port, e.g. 127.0.0.1:9092")
        return ",".join(servers)

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            raise ValueError("expected lower-case letters, digits, '.', '_' or '-', ending in '.'")
        return value

    def topic(self, name: str) -> str:
        """The full name of one of omnistitch's topics, e.g. ``topic('raw.events')``."""
        return f"{self.topic_prefix}{name}"


class WorkerSettings(KafkaSettings):
    """``omnistitch worker``: the stream processor and its query API."""

    app_id: str = Field(
        default="omnistitch",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="faust app id: the consumer group and the prefix of internal topics.",
    )
    state_dir: Path = Field(default=Path("var/state"), description="RocksDB state directory.")
    api_host: str = Field(default="127.0.0.1", description="Query API bind address.")
    api_port: int = Field(default=6066, ge=1, le=65535, description="Query API port.")
    tenant: str = Field(
        default="default",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Tenant whose identity graph this deployment owns.",
    )
    timeline_limit: int = Field(
        default=200, ge=1, le=100_000, description="Timeline entries kept per customer."
    )
    rules_file: Path | None = Field(
        default=None, description="Identity rules (TOML); the built-in defaults when unset."
    )

    @field_validator("rules_file")
    @classmethod
    def _rules_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value


class CollectorSettings(KafkaSettings):
    """``omnistitch collector``: the Segment-compatible tracking collector."""

    collector_host: str = Field(default="127.0.0.1", description="Collector bind address.")
    collector_port: int = Field(default=8088, ge=1, le=65535, description="Collector port.")
    write_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated write keys accepted as the basic-auth username.",
    )
    ack_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Longest wait for the broker's ack before 503."
    )
    max_body_bytes: int = Field(
        default=512 * 1024, ge=1024, description="Largest request body (Segment allows 500 KB)."
    )

    @field_validator("write_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("write_keys")
    @classmethod
    def _require_keys(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("set at least one write key, e.g. OMNISTITCH_WRITE_KEYS=key1,key2")
        return value


_S = TypeVar("_S", bound=BaseSettings)


def load(cls: type[_S]) -> _S:
    """Build settings from the environment, turning validation errors into one clear message."""
    try:
        return cls()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            lines.append(f"  OMNISTITCH_{field.upper()}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from exc
