from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnistitch.cli import cli
from pipeline.normalize import normalise_value
from pipeline.rules import Rules, RulesError, Trust, load_rules, suppression_hash

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "identity-rules.example.toml"


def test_defaults_match_the_documented_ones() -> None:
    rules = Rules()
    assert rules.types["user_id"].limit == 1
    assert rules.types["email"].limit == 5
    assert rules.types["phone"].limit == 5
    assert rules.types["user_id"].trust is Trust.VERIFIED
    assert rules.types["anonymous_id"].trust is Trust.UNVERIFIED
    for value in ("", "null", "anonymous", "0000", "---", "test@test.com"):
        assert rules.blocks("email", value) or not value.strip(), value


def test_example_rules_file_loads_and_applies() -> None:
    rules = load_rules(EXAMPLE)
    assert rules.version == "acme-2026-11"
    assert rules.types["phone"].limit_window_days == 365
    assert rules.types["device_id"].merge is False
    assert normalise_value("loyalty_card", " ABC-1 ", rules) == "abc-1"
    assert rules.types["anonymous_id"].limit == 50  # untouched types keep their defaults
    with pytest.raises(ValueError, match="blocked"):
        normalise_value("email", "noreply@acme.com", rules)
    with pytest.raises(ValueError, match="unknown identifier type"):
        normalise_value("fax", "1", rules)


def test_bad_rules_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('unknown_types = "maybe"\n[types.Email]\nlimit = 1\n[types.phone]\nlimit = 0\n')
    with pytest.raises(RulesError) as err:
        load_rules(path)
    text = str(err.value)
    assert "unknown_types" in text
    assert "types" in text
    path.write_text("this is not toml [")
    with pytest.raises(RulesError, match=r"rules\.toml"):
        load_rules(path)


def test_rules_check_command(tmp_path: Path) -> None:
    ok = CliRunner().invoke(cli, ["rules", "check", str(EXAMPLE)])
    assert ok.exit_code == 0
    assert "acme-2026-11" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[hub]\nmax_customers = 1\n")
    failed = CliRunner().invoke(cli, ["rules", "check", str(bad)])
    assert failed.exit_code == 2
    assert "hub.max_customers" in failed.output


def test_suppression_hash_hides_the_value() -> None:
    digest = suppression_hash("email:ann@x.com")
    assert "ann" not in digest
    assert len(digest) == 64
    assert digest == suppression_hash("email:ann@x.com")
