"""The domain logic stays free of Kafka: checked on the import graph, not on trust."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA = ("faust", "mode", "aiokafka", "confluent_kafka", "kafka")
#: Modules pipeline/README.md lists as pure logic (no Kafka/faust import).
PURE = [
    "pipeline.normalize",
    "pipeline.rules",
    "pipeline.identity",
    "pipeline.context",
    "pipeline.context_state",
    "pipeline.identity_state",
    "pipeline.context_ops",
    "pipeline.intake",
    "pipeline.gc_policy",
    "pipeline.interactions",
    "pipeline.triggers",
    "pipeline.context_policy",
    "pipeline.ops",
    "pipeline.query",
    "pipeline.lookup",
    "pipeline.write_behind",
    "pipeline.lru",
    "pipeline.partition_balance",
]


def _imports(module: str) -> set[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _closure(module: str) -> dict[str, str]:
    """Every module ``module`` imports, transitively within the repo -> who imports it."""
    seen: dict[str, str] = {}
    todo = [module]
    while todo:
        current = todo.pop()
        for name in _imports(current):
            if name in seen:
                continue
            seen[name] = current
            if (ROOT / (name.replace(".", "/") + ".py")).is_file():
                todo.append(name)
    return seen


@pytest.mark.parametrize("module", PURE)
def test_domain_modules_import_no_kafka_client_even_indirectly(module: str) -> None:
    kafka = {name: by for name, by in _closure(module).items() if name.split(".")[0] in KAFKA}
    assert not kafka, f"{module} reaches Kafka code: " + ", ".join(
        f"{name} (imported by {by})" for name, by in sorted(kafka.items())
    )


def test_the_pure_list_matches_the_readme() -> None:
    table = (ROOT / "pipeline" / "README.md").read_text()
    for module in PURE:
        assert f"`{module.split('.')[-1]}.py`" in table, module


def test_the_ingest_process_runs_without_faust() -> None:
    """``omnistitch ingest`` loads neither faust, aiokafka nor RocksDB: it is the stateless
    stage, and every library it loads is resident memory in each of its processes."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pipeline.ingest_process; "
            "print(sorted(m for m in ('faust', 'aiokafka', 'rocksdict') if m in sys.modules))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
