"""``shotline locator`` (services/locator/cli.py): run by default, ``fit`` refits the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from services.locator.cli import app
from services.locator.fit import synthetic_incidents, write_labels_csv
from services.locator.scoring import ScoringModel

runner = CliRunner()


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    write_labels_csv(synthetic_incidents(12, np.random.default_rng(4)), path)
    return path


def test_fit_writes_a_loadable_model_and_prints_its_calibration(
    labels: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model.json"
    result = runner.invoke(app, ["fit", str(labels), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = ScoringModel.load(out)
    assert "+refit." in model.version  # refitted, not the packaged model copied
    assert "rows 36" in result.stdout and "brier" in result.stdout and "AUC" in result.stdout
    assert "observed gunfire" in result.stdout  # the reliability table


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),  # missing file
        ("label\n", "no data rows"),  # header only
        ("label,colour\ngunfire,red\n", "unknown column"),  # not a labels file
        ("label\ngunfire\n", "need at least"),  # too few rows of each label to fit
    ],
)
def test_fit_explains_bad_input_without_a_traceback(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "labels.csv"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["fit", str(path), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m.json").exists()


def test_fit_reports_an_unwritable_output(labels: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(labels), "--out", str(tmp_path / "no" / "m.json")])
    assert result.exit_code == 2
    assert "No such file or directory" in result.output


def test_running_with_bad_settings_fails_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOTLINE_LOCATOR_MAX_RETAINED", "lots")
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "invalid settings: SHOTLINE_LOCATOR_MAX_RETAINED: " in result.output
