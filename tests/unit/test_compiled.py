"""The domain modules mypyc compiles (``make compiled``): which, and never a stale one."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

import pipeline
from tests.unit.test_architecture import PURE

ROOT = Path(__file__).resolve().parents[2]
STAMP = ROOT / "build" / "mypyc.stamp"


def makefile_compiled() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    found = re.search(r"^COMPILED := (.+)$", text, re.MULTILINE)
    assert found, "the Makefile names the compiled modules in COMPILED"
    return [f"pipeline.{name}" for name in found.group(1).split()]


def test_only_pure_domain_modules_are_compiled() -> None:
    # Kafka-free (test_architecture) and classes mypyc can compile: no pydantic or msgspec
    # classes of their own (mypyc drops msgspec.Struct's class keywords: kw_only, frozen).
    for module in makefile_compiled():
        assert module in PURE, module
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert not re.search(r"class \w+\((BaseModel|msgspec\.Struct)", source), module


def test_the_modules_run_compiled_exactly_when_built() -> None:
    # `make test` builds them first (CI runs them compiled); a plain checkout has none.
    for module in makefile_compiled():
        importlib.import_module(module)
    expected = sorted(makefile_compiled()) if STAMP.exists() else []
    assert pipeline.compiled_modules() == expected


def test_an_extension_older_than_its_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "identity.py"
    extension = tmp_path / "identity.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    extension.write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(extension, (2_000, 2_000))
    pipeline._refuse_stale_extensions(tmp_path)  # built after its source: fine
    os.utime(source, (3_000, 3_000))  # the source edited since
    with pytest.raises(ImportError, match=r"older identity\.py: run `make compiled`"):
        pipeline._refuse_stale_extensions(tmp_path)
