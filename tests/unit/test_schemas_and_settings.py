from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnistitch.cli import cli
from omnistitch.settings import (
    CollectorSettings,
    LagExporterSettings,
    RoutingConsumerSettings,
    SettingsError,
    WorkerSettings,
    load,
)
from schemas.export import EXPORTED, export


def test_committed_json_schemas_match_the_models() -> None:
    assert export(check=True) == [], "run: omnistitch schemas export"


def test_export_writes_every_schema(tmp_path: Path) -> None:
    assert sorted(export(directory=tmp_path)) == sorted(EXPORTED)
    assert export(check=True, directory=tmp_path) == []
    (tmp_path / "raw_event.v1.schema.json").write_text("{}")
    assert export(check=True, directory=tmp_path) == ["raw_event.v1.schema.json"]


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTITCH_BOOTSTRAP_SERVERS", "localhost")
    monkeypatch.setenv("OMNISTITCH_API_PORT", "99999")
    with pytest.raises(SettingsError) as err:
        load(WorkerSettings)
    assert "OMNISTITCH_BOOTSTRAP_SERVERS" in str(err.value)
    assert "OMNISTITCH_API_PORT" in str(err.value)


def test_collector_requires_a_write_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNISTITCH_WRITE_KEYS", raising=False)
    with pytest.raises(SettingsError, match="OMNISTITCH_WRITE_KEYS"):
        load(CollectorSettings)
    monkeypatch.setenv("OMNISTITCH_WRITE_KEYS", " k1, k2 ,")
    assert load(CollectorSettings).write_keys == ["k1", "k2"]


def test_cli_fails_fast_on_bad_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTITCH_TOPIC_PREFIX", "Bad Prefix")
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 2
    assert "OMNISTITCH_TOPIC_PREFIX" in result.output


def test_every_setting_is_documented_in_the_readme() -> None:
    root = Path(__file__).resolve().parents[2]
    # Operator settings (security, lag exporter) are documented in deploy/README.md.
    readme = (root / "README.md").read_text() + (root / "deploy" / "README.md").read_text()
    fields = {
        *WorkerSettings.model_fields,
        *CollectorSettings.model_fields,
        *LagExporterSettings.model_fields,
        *RoutingConsumerSettings.model_fields,
    }
    missing = [f for f in sorted(fields) if f"`OMNISTITCH_{f.upper()}`" not in readme]
    assert missing == [], "document these settings in README.md or deploy/README.md"


def test_each_topic_is_created_once_with_its_first_spec() -> None:
    from omnistitch.topics import TopicSpec, unique_topics

    public = [TopicSpec("p.customer.context", 8, {"min.compaction.lag.ms": "0"})]
    internal = [TopicSpec("p.customer.context", 8, {}), TopicSpec("p.app-ops", 8)]
    assert unique_topics(public, internal) == [public[0], internal[1]]


@pytest.mark.parametrize("command", ["worker", "ingest"])
def test_a_stage_process_refuses_a_bad_rules_file_before_starting(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text("[hub]\nmax_customers = 1\n")
    monkeypatch.setenv("OMNISTITCH_RULES_FILE", str(rules))
    result = CliRunner().invoke(cli, [command])
    assert result.exit_code == 2
    assert "hub.max_customers" in result.output
