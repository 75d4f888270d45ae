"""The connector interface: the guide's worked example runs as written, connectors are
found through entry points, and every connector setting is documented in the guide."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from importlib.metadata import entry_points as installed_entry_points
from pathlib import Path
from typing import Any

import pytest

from connectors.base import (
    ENTRY_POINT_GROUP,
    Connector,
    ConnectorSettings,
    HttpConnector,
    UnknownConnector,
    available,
    load_connector,
)
from connectors.http import create_app
from connectors.publisher import InMemoryPublisher
from connectors.runner import prepare
from omnistitch.settings import SettingsError
from tests.connector_support import TOPIC, AsgiClient, metric, published

GUIDE = Path(__file__).resolve().parents[2] / "connectors" / "README.md"
INSTALLED = {"cti", "email", "meta", "twilio", "webchat"}
TOKEN = "survey-token-0123456789"


def worked_example() -> str:
    text = GUIDE.read_text()
    section = text[text.index("### Worked example") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the worked example's code block"
    return match.group(1)


@pytest.fixture
def survey_module() -> Iterator[types.ModuleType]:
    """The guide's example as an importable module, ``survey_example``."""
    module = types.ModuleType("survey_example")
    sys.modules[module.__name__] = module
    exec(compile(worked_example(), str(GUIDE), "exec"), module.__dict__)
    yield module
    del sys.modules[module.__name__]


@pytest.fixture
def with_survey_entry_point(
    survey_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def entry_points(group: str) -> list[EntryPoint]:
        extra = EntryPoint("survey", "survey_example:SurveyConnector", ENTRY_POINT_GROUP)
        return [*installed_entry_points(group=group), extra]

    monkeypatch.setattr("connectors.base.entry_points", entry_points)


def test_worked_example_serves_its_contract(survey_module: types.ModuleType) -> None:
    settings = survey_module.SurveySettings(token=TOKEN)
    connector: HttpConnector[Any] = survey_module.SurveyConnector(settings)
    publisher = InMemoryPublisher()
    client = AsgiClient(create_app(connector, TOPIC, publisher))
    good = {"id": "r-1", "email": "ann@example.com", "score": 5, "comment": "great"}
    headers = {"X-Survey-Token": TOKEN}
    assert client.post("/survey/responses", json=good, headers=headers).status_code == 200
    [(key, event)] = published(publisher)
    assert (key, event.event_id, event.kind) == ("email:ann@example.com", "survey:r-1", "csat")
    bad = client.post("/survey/responses", json={**good, "score": 9}, headers=headers)
    assert (bad.status_code, bad.json()["errors"][0]["field"]) == (400, "score")
    forged = client.post("/survey/responses", json=good, headers={"X-Survey-Token": "nope"})
    assert forged.status_code == 403
    assert metric(client, "omnistitch_connector_signature_failures_total", connector="survey") == 1
    assert client.get("/readyz").status_code == 200


@pytest.mark.usefixtures("with_survey_entry_point")
def test_a_registered_connector_is_found_and_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(available()) == {*INSTALLED, "survey"}
    monkeypatch.delenv("OMNISTITCH_SURVEY_TOKEN", raising=False)
    with pytest.raises(SettingsError, match="OMNISTITCH_SURVEY_TOKEN: Field required"):
        prepare("survey")
    monkeypatch.setenv("OMNISTITCH_SURVEY_TOKEN", TOKEN)
    prepared = prepare("survey")
    assert prepared.connector.name == "survey"
    assert prepared.connector.settings.port == 8099


def test_installed_connectors_load_as_connector_classes() -> None:
    assert set(available()) == INSTALLED
    prefixes = set()
    for name in INSTALLED:
        cls = load_connector(name)
        assert issubclass(cls, Connector)
        assert cls.name == name
        assert issubclass(cls.settings_class, ConnectorSettings)
        prefixes.add(cls.settings_class.model_config["env_prefix"])
    assert len(prefixes) == len(INSTALLED)  # no two connectors share a variable


def test_unknown_and_broken_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownConnector, match=r"installed: cti, email, meta, twilio, webchat"):
        load_connector("fax")

    def entry_points(group: str) -> list[EntryPoint]:
        return [EntryPoint("broken", "json:loads", group)]

    monkeypatch.setattr("connectors.base.entry_points", entry_points)
    with pytest.raises(TypeError, match=r"not a connectors\.base\.Connector"):
        load_connector("broken")


@pytest.mark.parametrize("name", sorted(INSTALLED))
def test_every_connector_setting_is_documented(name: str) -> None:
    guide = GUIDE.read_text()
    settings = load_connector(name).settings_class
    prefix = settings.model_config["env_prefix"]
    missing = [f for f in settings.model_fields if f"`{prefix}{f.upper()}`" not in guide]
    assert missing == [], f"document these settings in connectors/README.md ({prefix})"
