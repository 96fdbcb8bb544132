"""LocatorSettings (services/locator/settings.py): environment -> service + engine tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.locator.config import LocatorConfig
from services.locator.settings import LocatorSettings


def test_defaults_map_onto_the_engines_own_defaults() -> None:
    assert LocatorSettings().locator_config() == LocatorConfig()


def test_prefixed_environment_reaches_the_engine_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOTLINE_LOCATOR_MIN_SENSORS", "5")
    monkeypatch.setenv("SHOTLINE_LOCATOR_UPDATE_WINDOW_S", "30")
    monkeypatch.setenv("SHOTLINE_LOCATOR_ASSOCIATION_TOLERANCE_S", "0.02")
    monkeypatch.setenv("SHOTLINE_LOCATOR_GROUP_ID", "east")
    monkeypatch.setenv("SHOTLINE_INCIDENTS_TOPIC", "inc")  # common, unprefixed
    settings = LocatorSettings()
    config = settings.locator_config()
    assert (config.min_sensors, config.update_window_s, config.association_tolerance_s) == (
        5, 30.0, 0.02,
    )
    assert (settings.group_id, settings.incidents_topic) == ("east", "inc")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"min_sensors": 2}, "min_sensors"),  # cannot solve position + time from 2
        ({"max_retained": 100, "resume_retained": 100}, "resume_retained"),  # no hysteresis
        ({"scoring_model_path": "/no/such/model.json"}, "is not a file"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"association_tolerance_s": 0}, "association_tolerance_s"),
    ],
)
def test_bad_values_fail_at_start_up(values: dict, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        LocatorSettings.model_validate(values)


def test_an_existing_scoring_model_path_is_accepted(tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text("{}")
    assert LocatorSettings(scoring_model_path=model).scoring_model_path == model
