"""Readers of ``customer.context`` other than the pipeline, against the real broker.

* kcat, a non-Python client (librdkafka's command-line tool, Debian's ``kcat`` package from
  ``make system-deps``; a missing binary fails the test): the README's one-liner reads
  contexts and tombstones, and every payload passes the exported JSON Schema.
* The README's Python consumer example, extracted from README.md and run as it is written,
  so the guide cannot drift from what works.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Producer

from omnistitch.settings import KafkaSettings
from omnistitch.topics import CUSTOMER_CONTEXT, ensure_topics
from schemas.context import CustomerContext, Routing
from tests.context_samples import context, repeat_caller, vip_spanish_speaker

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SCHEMA = REPO / "schemas" / "json" / "customer_context.v1.schema.json"


@pytest.fixture
def topic(kafka_bootstrap: str, unique_prefix: str) -> str:
    """This test's own ``customer.context`` (its topics created as a worker creates them)."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix)
    ensure_topics(settings)
    return settings.topic(CUSTOMER_CONTEXT)


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, int | None]]
) -> None:
    """``(key, value, partition)`` records, in order; partition None: by key (murmur2)."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for key, value, partition in records:
        if partition is None:
            producer.produce(topic, key=key, value=value)
        else:
            producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(15) == 0


def body(ctx: CustomerContext) -> bytes:
    """A context's value, serialised as the pipeline serialises it."""
    return ctx.model_dump_json().encode()


def readme_block(language: str, after_heading: str) -> str:
    """The first ``language`` code block of README.md below ``after_heading``."""
    text = README.read_text()
    start = text.index(after_heading)
    match = re.compile(rf"^```{language}\n(.*?)^```$", re.S | re.M).search(text, start)
    assert match is not None, f"no {language} block after {after_heading!r} in README.md"
    return match.group(1)


def readme_kcat_command(bootstrap: str, topic: str) -> list[str]:
    """The README's kcat one-liner, pointed at the test broker and topic."""
    block = readme_block("bash", "#### From any language: kcat")
    lines = [line for line in block.splitlines() if line.startswith("kcat ")]
    assert len(lines) == 1, block
    argv = shlex.split(lines[0])
    assert argv[argv.index("-b") + 1] == "127.0.0.1:9092"
    assert argv[argv.index("-t") + 1] == "customer.context"
    argv[argv.index("-b") + 1] = bootstrap
    argv[argv.index("-t") + 1] = topic
    return argv


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    assert cls is jsonschema.Draft202012Validator  # the dialect the files declare
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_kcat_reads_contexts_and_tombstones_that_match_the_json_schema(
    kafka_bootstrap: str, topic: str
) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("the kcat binary is missing: run `make system-deps`", pytrace=False)
    contexts = [repeat_caller("cus_repeat"), vip_spanish_speaker("cus_vip"), context("cus_gone")]
    produce(
        kafka_bootstrap,
        topic,
        [*((c.customer_id.encode(), body(c), None) for c in contexts), (b"cus_gone", None, None)],
    )

    proc = subprocess.run(
        readme_kcat_command(kafka_bootstrap, topic),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["topic"] for r in records} == {topic}
    by_key: dict[str, list[str | None]] = {}
    for record in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        by_key.setdefault(record["key"], []).append(record["payload"])
    assert sorted(by_key) == ["cus_gone", "cus_repeat", "cus_vip"]
    assert by_key["cus_gone"][-1] is None  # the tombstone, after the context it removes
    assert [len(v) for _, v in sorted(by_key.items())] == [2, 1, 1]

    validator = schema_validator()
    for ctx in contexts:
        payload = by_key[ctx.customer_id][0]
        assert payload is not None
        value = json.loads(payload)
        errors = [e.message for e in validator.iter_errors(value)]
        assert errors == [], (ctx.customer_id, errors)
        assert value == ctx.model_dump(mode="json")  # kcat saw the bytes that were sent
        assert CustomerContext.model_validate_json(payload) == ctx

    # The schema is strict enough to catch a reader's or a writer's mistake.
    value = json.loads(by_key["cus_vip"][0] or "")
    broken: list[dict[str, Any]] = [
        {k: v for k, v in value.items() if k != "customer_id"},
        {**value, "schema_version": 2},
        {**value, "routing": {**value["routing"], "vip": "yes"}},
        {**value, "unknown_field": 1},
    ]
    for bad in broken:
        assert not validator.is_valid(bad), bad


class RecordingView(dict[str, CustomerContext]):
    """A dict that remembers every change made to it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, int | None]] = []

    def __setitem__(self, key: str, value: CustomerContext) -> None:
        self.changes.append((key, value.version))
        super().__setitem__(key, value)

    def pop(self, key: str, default: Any = None) -> Any:
        self.changes.append((key, None))
        return super().pop(key, default)


def test_the_readme_python_consumer_keeps_a_correct_view(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    code = readme_block("python", "#### Reading it from Python")
    exec(compile(code, str(README), "exec"), namespace)
    follow_customers = namespace["follow_customers"]

    keep = vip_spanish_speaker("cus_keep")
    keep_v13 = keep.model_copy(update={"version": 13, "routing": Routing(language="es")})
    partitions = 8  # OMNISTITCH_RAW_PARTITIONS' default, as ensure_topics created it
    produce(
        kafka_bootstrap,
        topic,
        [
            (b"cus_keep", body(keep), None),  # version 12
            (b"cus_keep", body(keep_v13), None),
            (b"cus_keep", body(keep), None),  # a late repeat of version 12
            (b"cus_gone", body(context("cus_gone")), None),
            (b"cus_gone", None, None),  # merged away
            (b"cus_bad", b'{"schema_version": 2, "customer_id": "cus_bad"}', None),
            # Last on every partition: once all are in the view, everything before is read.
            *((f"end-{p}".encode(), body(context(f"end-{p}")), p) for p in range(partitions)),
        ],
    )

    view = RecordingView()
    ends = {f"end-{p}" for p in range(partitions)}
    deadline = time.monotonic() + 60
    follow_customers(
        view,
        bootstrap_servers=kafka_bootstrap,
        topic=topic,
        group_id=f"{topic}-agent-desktop",
        running=lambda: not ends <= view.keys() and time.monotonic() < deadline,
    )

    assert ends <= view.keys(), f"the example did not read the topic: {view.changes}"
    assert {k: v for k, v in view.items() if k not in ends} == {"cus_keep": keep_v13}

    def changes(key: str) -> list[int | None]:
        return [version for k, version in view.changes if k == key]

    assert changes("cus_keep") == [12, 13]  # and not 12 again
    assert changes("cus_gone") == [3, None]  # the tombstone removed it
    assert changes("cus_bad") == []
    skipped = [r for r in caplog.records if r.name == "agent-desktop"]
    assert [r.getMessage() for r in skipped] == ["skipping customer cus_bad: Input should be 1"]
