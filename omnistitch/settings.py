"""Process settings, read from ``OMNISTITCH_*`` environment variables (or a ``.env`` file).

Each process validates its settings at start-up and refuses to run on a bad value, with a
message naming the variable. Every variable is listed, with its default, in README.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from omnistitch.routing_hints import RoutingPolicy

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
    # Secured clusters (see deploy/README.md): mapped to every client by omnistitch.kafka_client.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(default=None, description="SASL username.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (secret).")
    ssl_ca_location: Path | None = Field(
        default=None, description="CA bundle (PEM) for SSL/SASL_SSL; the system store when unset."
    )

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

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                "OMNISTITCH_SASL_USERNAME and OMNISTITCH_SASL_PASSWORD are required "
                f"with OMNISTITCH_SECURITY_PROTOCOL={self.security_protocol}"
            )
        return self

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
    ingest_in_worker: bool = Field(
        default=True,
        description="Run the ingest stage on a thread of the worker; false where "
        "`omnistitch ingest` runs it as processes of their own (stateless, scaled apart from "
        "the workers, with the worker's interpreter lock left to the faust stages).",
    )
    timeline_limit: int = Field(
        default=200, ge=1, le=100_000, description="Timeline entries kept per customer."
    )
    context_cache_size: int = Field(
        default=2_000,
        ge=1,
        le=1_000_000,
        description="Parsed customer contexts kept in memory per worker (an LRU).",
    )
    context_cache_mb: float = Field(
        default=32.0,
        gt=0,
        le=65_536,
        description="Most the cached contexts may weigh, in MB of their encoded size (their "
        "memory parsed is ~1.4-1.9x that): a context grows with its history, to ~300 KB "
        "parsed for 200 chat messages, so a count alone does not bound the cache.",
    )
    rules_file: Path | None = Field(
        default=None, description="Identity rules (TOML); the built-in defaults when unset."
    )
    context_file: Path | None = Field(
        default=None,
        description="Context policy (TOML: bounds, trait rules, triggers); defaults when unset.",
    )
    identity_hot_rows: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Identity rows kept in memory per identity table (an LRU).",
    )
    identity_parsed_nodes: int = Field(
        default=5_000,
        ge=1,
        le=1_000_000,
        description="Parsed identity nodes kept per worker (an LRU): a customer's node, "
        "with every link and its evidence, is parsed once while its row is unchanged.",
    )
    context_hot_rows: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Rows of the context stage's small tables (redirects, splits, trigger "
        "schedule) kept in memory per table (an LRU; absent rows too).",
    )
    fetch_backoff_s: float = Field(
        default=0.005,
        gt=0,
        le=1.0,
        description="Longest the consumer holds a broker's next fetch while fetched records "
        "wait (aiokafka's prefetch_backoff, 0.1 s by default): bounds the latency per hop.",
    )
    fetch_max_wait_s: float = Field(
        default=0.02,
        gt=0,
        le=5.0,
        description="Longest the broker holds the worker's fetch request for data (faust "
        "sets 1.5 s): a record on a partition left out of the request in flight waits that "
        "long (pipeline/fetch_backoff.py).",
    )
    consumer_thread: bool = Field(
        default=False,
        description="Run faust's aiokafka consumer on a thread of its own (faust's way), not "
        "on the stages' event loop (pipeline/consumer_loop.py): each fetch then crosses "
        "between the two threads.",
    )
    batch_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most raw records the ingest stage takes in one batch, and so the most "
        "requests one identity-log record carries.",
    )
    batch_records: int = Field(
        default=8,
        ge=1,
        le=1_000,
        description="Most records the identity and context stages take in one batch (faust "
        "take_events); each record carries up to batch_max requests or ops.",
    )
    batch_wait_s: float = Field(
        default=0.005,
        ge=0.0005,
        le=1.0,
        description="Longest a stage waits to fill a batch: latency added per stage at low load "
        "(the identity and context stages' take; how long the broker may hold the ingest "
        "stage's fetch for 64 KB of raw events).",
    )
    ingest_commit_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Most seconds between the ingest stage's offset commits (0: after every "
        "batch). Only offsets whose requests the broker acknowledged are committed, and a "
        "partition's are committed before it moves to another worker; a crash re-reads at "
        "most this long of raw events, resolved again idempotently. Per batch, a worker "
        "committed ~70 times a second at 2,000 ev/s.",
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        le=10_000_000,
        description="Allocations between the garbage collector's youngest-generation runs "
        "(Python's default is 700; 0 keeps it). Decoding a batch allocates thousands of "
        "objects, and at 700 each batch set off collections that walked the parsed-context "
        "cache again and again (pipeline/gc_policy.py).",
    )
    heap_trim_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds between returns of the freed heap to the OS (glibc's "
        "malloc_trim, on a thread of its own; 0: never). A drained worker's heap was a "
        "third free holes that glibc kept resident (pipeline/heap_trim.py).",
    )
    trigger_interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="How often due engagement triggers are checked."
    )
    session_timeout_s: float = Field(
        default=45.0,
        ge=6.0,
        le=1800.0,
        description="How long a consumer group waits for a silent worker before moving its "
        "partitions to the others (session.timeout.ms: faust's group and the ingest stage's; "
        "the broker accepts 6 s to 30 min by default). A crashed worker's raw events and "
        "stages wait this long; too short and a worker busy in a long pause is taken for "
        "dead.",
    )
    standby_replicas: int = Field(
        default=1, ge=0, le=8, description="Standby copies of each table partition (faust)."
    )
    identity_partition_weight: float = Field(
        default=1.0,
        ge=1.0,
        le=1_000_000.0,
        description="How many ordinary partition indices the index holding the tenant's "
        "identity requests weighs when faust's assignor places the stages' partitions over "
        "the workers (pipeline/weighted_assignor.py): its worker runs every identity "
        "decision, so it takes that much fewer of the others. 1 (the default) keeps faust's "
        "even spread; the partition count leaves that worker its own index alone (opt-in: on "
        "2 shared cores it cut that worker's CPU an event by a quarter, and the pair's "
        "throughput stayed within the noise).",
    )
    changelog_replay: Literal["librdkafka", "faust"] = Field(
        default="librdkafka",
        description="What replays the tables' changelogs into their databases (standby "
        "copies, and partitions restored before the stages use them): librdkafka, a "
        "confluent-kafka consumer on a thread of its own writing each partition's records in "
        "batches (pipeline/changelog_replay.py); faust, faust's recovery loop, a record at a "
        "time on the event loop the stages run on.",
    )
    rocksdb_cache_mb: int = Field(
        default=32,
        ge=8,
        le=65_536,
        description="MiB of RocksDB block cache (data, index and filter blocks) shared by "
        "every table partition the worker holds, however many there are.",
    )
    rocksdb_write_buffer_mb: int = Field(
        default=32,
        ge=8,
        le=65_536,
        description="MiB of RocksDB write buffers (memtables) shared by every table partition "
        "the worker holds, charged to the block cache: the worker's RocksDB memory is about "
        "this plus OMNISTITCH_ROCKSDB_CACHE_MB.",
    )
    lag_interval_s: float = Field(
        default=10.0, ge=0.2, le=600, description="How often the worker reads its group's lag."
    )

    @field_validator("rules_file", "context_file")
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


class LagExporterSettings(KafkaSettings):
    """``omnistitch lag-exporter``: consumer lag read from the broker, for Prometheus."""

    app_id: str = Field(
        default="omnistitch",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="The workers' app id: the default group and its pipeline topics.",
    )
    lag_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated consumer groups to watch (default: the workers' two "
        "groups, <app id>-ingest and <app id>).",
    )
    lag_topics: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Topics a watched group reads, per group, as JSON "
        '({"agent-desktop": ["prod.customer.context"]}; full topic names): their lag is '
        "reported before the group's first commit on them, and only their partitions are "
        "read from the broker, where a group named without topics costs every reading the "
        "whole cluster's metadata. The workers' groups are known already.",
    )
    lag_interval_s: float = Field(
        default=10.0, ge=0.2, le=600, description="Seconds between two reads of the offsets."
    )
    lag_sample_partitions: int = Field(
        default=64,
        ge=0,
        le=10_000,
        description="Most lagging partitions whose oldest record is fetched for lag seconds.",
    )
    lag_exporter_host: str = Field(default="127.0.0.1", description="Exporter bind address.")
    lag_exporter_port: int = Field(default=9309, ge=1, le=65535, description="Exporter port.")

    @field_validator("lag_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return [g.strip() for g in value.split(",") if g.strip()]
        return value

    @model_validator(mode="after")
    def _topics_of_watched_groups(self) -> LagExporterSettings:
        unwatched = sorted(set(self.lag_topics) - set(self.groups))
        if unwatched:
            raise ValueError(
                f"lag_topics names groups that are not watched: {unwatched} "
                f"(watched: {self.groups}; add them to OMNISTITCH_LAG_GROUPS)"
            )
        empty = sorted(g for g, topics in self.lag_topics.items() if not topics)
        if empty:
            raise ValueError(f"lag_topics lists no topic for {empty}")
        return self

    @property
    def groups(self) -> list[str]:
        """The groups to watch: ``lag_groups``, or the workers' groups (ingest's, faust's)."""
        from omnistitch.topics import ingest_group  # topics imports this module

        return self.lag_groups or [ingest_group(self.app_id), self.app_id]


class RoutingConsumerSettings(KafkaSettings):
    """``omnistitch routing-consumer``: the example downstream service (routing hints)."""

    routing_group_id: str = Field(
        default="omnistitch-routing",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Consumer group reading customer.context.",
    )
    routing_default_queue: str | None = Field(
        default="general",
        min_length=1,
        description="Queue suggested when neither the language nor an interaction gives one.",
    )
    routing_language_queues: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Comma-separated language=queue pairs, e.g. es=support-es,fr=support-fr.",
    )
    routing_cache_size: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Customers whose last published hint is remembered (an LRU).",
    )
    routing_metrics_host: str = Field(default="127.0.0.1", description="Metrics bind address.")
    routing_metrics_port: int = Field(
        default=9310, ge=0, le=65535, description="Prometheus /metrics port (0: not served)."
    )

    @field_validator("routing_default_queue")
    @classmethod
    def _check_default_queue(cls, value: str | None) -> str | None:
        return RoutingPolicy(default_queue=value).default_queue

    @field_validator("routing_language_queues", mode="before")
    @classmethod
    def _split_language_queues(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            language, sep, queue = item.partition("=")
            if not sep:
                raise ValueError(f"expected language=queue, got {item!r}")
            if language.strip().lower() in pairs:
                raise ValueError(f"language {language.strip()!r} given twice")
            pairs[language.strip().lower()] = queue.strip()
        return pairs

    @field_validator("routing_language_queues")
    @classmethod
    def _check_language_queues(cls, value: dict[str, str]) -> dict[str, str]:
        return dict(RoutingPolicy(language_queues=value).language_queues)

    def routing_policy(self) -> RoutingPolicy:
        """The routing rules' configurable part: the language queues and the default."""
        return RoutingPolicy(
            default_queue=self.routing_default_queue,
            language_queues=self.routing_language_queues,
        )


_S = TypeVar("_S", bound=BaseSettings)


def load(cls: type[_S], env_file: Path | None = None) -> _S:
    """Build settings from the environment, turning validation errors into one clear message.

    ``env_file`` replaces the default ``.env``; variables in the environment still win.
    Messages name the variable with the class's own prefix (e.g. ``OMNISTITCH_TWILIO_``).
    """
    prefix = str(cls.model_config.get("env_prefix") or "OMNISTITCH_")
    try:
        return cls() if env_file is None else cls(_env_file=env_file)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            lines.append(f"  {prefix}{field.upper()}: {err['msg']}")
        raise SettingsError("invalid configuration:\n" + "\n".join(lines)) from exc
