"""Specification of the gunfire scorer (services/locator/scoring.py) with the packaged model."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.locator.evidence import PulseEvidence, ShotEvidence
from services.locator.scoring import (
    FEATURE_COLUMNS,
    IncidentFeatures,
    ScoringModel,
    extract_features,
    packaged_model,
    score,
)


def shot(
    *,
    sensors: int = 12,
    source_level_db: float | None = 150.0,
    rise_ms: float | None = 0.5,
    duration_ms: float | None = 2.0,
    centroid_hz: float | None = 1200.0,
    residual_s: float = 0.0005,
    intervals: tuple[float, ...] = (),
    nearest_m: float = 150.0,
) -> ShotEvidence:
    """Evidence of a round heard by ``sensors`` sensors spread from ``nearest_m`` outwards.

    Received levels follow spherical spreading from ``source_level_db`` (so the spreading-
    corrected level of every pulse is exactly that), None = sensors did not report it.
    """
    pulses = []
    for i in range(sensors):
        d = nearest_m + 80.0 * i
        peak = None if source_level_db is None else source_level_db - 20 * math.log10(d)
        pulses.append(
            PulseEvidence(f"s{i}", d, peak, None if peak is None else peak - 62.0,
                          rise_ms, duration_ms, centroid_hz)
        )
    return ShotEvidence(tuple(pulses), sensors, residual_s, intervals)


CASES = [
    # loud, sharp, short, bright, tight residual, a steady 0.3 s cadence: textbook gunfire
    ("gunfire", shot(intervals=(0.30, 0.32, 0.29)), {"gunfire"}),
    # a single loud sharp report is still gunfire on the acoustic features alone
    ("single_shot", shot(), {"gunfire"}),
    # quieter, slow onset, long and bassy, many irregular pops: fireworks
    (
        "fireworks",
        shot(sensors=9, source_level_db=132.0, rise_ms=3.0, duration_ms=30.0, centroid_hz=250.0,
             intervals=(0.05, 0.40, 0.12, 0.90, 0.07, 0.22)),
        {"fireworks"},
    ),
    # sensors that report no features at all, but 14 of them agree within 5 ms: at least
    # probable (the real Pittsburgh array reports only level and SNR)
    (
        "no_features_good_geometry",
        shot(sensors=14, source_level_db=None, rise_ms=None, duration_ms=None, centroid_hz=None,
             residual_s=0.005),
        {"gunfire", "probable_gunfire"},
    ),
    # level only (like Pittsburgh): a typical real round, 140 dB corrected, 16 sensors
    (
        "level_only_pittsburgh_like",
        shot(sensors=16, source_level_db=140.0, rise_ms=None, duration_ms=None, centroid_hz=None,
             residual_s=0.0065, intervals=(0.6,)),
        {"gunfire", "probable_gunfire"},
    ),
    # one sensor, barely above its noise floor: nothing to alert on
    (
        "single_weak_sensor",
        shot(sensors=1, source_level_db=108.0, rise_ms=None, duration_ms=None, centroid_hz=None,
             residual_s=0.0),
        {"other"},
    ),
    # a slow, long, quiet thump heard by a few sensors (construction, dumpster): other
    (
        "impulsive_urban_noise",
        shot(sensors=4, source_level_db=120.0, rise_ms=8.0, duration_ms=150.0,
             centroid_hz=600.0, residual_s=0.008),
        {"other"},
    ),
]


@pytest.mark.parametrize(("name", "evidence", "expected"), CASES, ids=[c[0] for c in CASES])
def test_classification_table(name: str, evidence: ShotEvidence, expected: set[str]) -> None:
    result = packaged_model().score(evidence)
    assert result.classification in expected, (name, result)
    assert 0.0 <= result.probability <= 1.0


def test_module_score_and_call_use_the_packaged_model() -> None:
    ev = shot(intervals=(0.3,))
    assert score(ev) == packaged_model().score(ev) == packaged_model()(ev)


@pytest.mark.parametrize(
    "shape",
    [{"duration_ms": d} for d in (1, 2, 8, 64)]
    + [{"rise_ms": r} for r in (0.1, 1.0, 8.0)]
    + [{"centroid_hz": c} for c in (250.0, 600.0, 3000.0)],
)
def test_the_pulse_shape_is_neutral(shape: dict) -> None:
    """Rise, duration and centroid carry no evidence: the kit's real recordings are gunfire
    only, so their non-gunfire values are assumptions (docs/scoring.md, neutral features)."""
    unreported = {"rise_ms": None, "duration_ms": None, "centroid_hz": None}
    base = packaged_model().score(shot(**unreported))
    assert packaged_model().score(shot(**{**unreported, **shape})) == base


def test_probability_rises_with_more_agreeing_sensors() -> None:
    probs = [packaged_model().score(shot(sensors=n, source_level_db=None, rise_ms=None,
                                         duration_ms=None, centroid_hz=None)).probability
             for n in (3, 4, 6, 9, 14, 20)]
    assert probs == sorted(probs)


def test_irregular_cadence_lowers_probability() -> None:
    steady = shot(source_level_db=None, rise_ms=None, duration_ms=None, centroid_hz=None,
                  intervals=(0.5, 0.5, 0.52, 0.49))
    ragged = replace(steady, round_intervals_s=(0.05, 1.5, 0.1, 0.9))
    m = packaged_model()
    assert m.score(steady).probability > m.score(ragged).probability


def test_class_follows_probability_thresholds() -> None:
    m = packaged_model()
    t = m.thresholds
    assert m.classify({"gunfire": t.gunfire, "fireworks": 0.0, "other": 1 - t.gunfire}
                      ).classification == "gunfire"
    below = t.gunfire - 0.01
    assert m.classify({"gunfire": below, "fireworks": 1 - below, "other": 0.0}
                      ).classification == "probable_gunfire"
    low = t.probable_gunfire - 0.01
    assert m.classify({"gunfire": low, "fireworks": 1 - low, "other": 0.0}
                      ).classification == "fireworks"
    assert m.classify({"gunfire": low, "fireworks": 0.2, "other": 0.8 - low}
                      ).classification == "other"


def test_missing_feature_is_neutral() -> None:
    # a feature reported at exactly its neutral centre scores the same as one not reported
    m = packaged_model()
    spec = next(f for f in m.features if f.name == "source_level")
    base = IncidentFeatures(sensor_count=8, residual_rms_s=0.001, rounds=1)
    assert m.probabilities(replace(base, source_level_db=spec.center)) == pytest.approx(
        m.probabilities(base)
    )


def test_extract_features_spreading_correction_and_cadence() -> None:
    ev = shot(sensors=5, source_level_db=150.0, intervals=(0.2, 0.4))
    f = extract_features(ev)
    assert f.source_level_db == pytest.approx(150.0)
    assert f.source_level_spread_db == pytest.approx(0.0, abs=1e-9)
    assert f.rounds == 3
    assert f.interval_median_s == pytest.approx(0.3)
    assert f.interval_cv == pytest.approx(0.1 / 0.3)
    empty = extract_features(shot(sensors=2, source_level_db=None, rise_ms=None,
                                  duration_ms=None, centroid_hz=None))
    assert (empty.source_level_db, empty.source_level_spread_db, empty.rise_time_ms) == (
        None, None, None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.05, 5.0), min_size=2, max_size=120))
def test_cadence_spread_is_the_population_coefficient_of_variation(intervals) -> None:
    # Computed in floats (statistics.pstdev is exact in fractions, ~0.5 ms for a fireworks
    # show's intervals on every update); it must still be the same number to ~1e-15.
    cv = extract_features(shot(intervals=tuple(intervals))).interval_cv
    assert cv == pytest.approx(statistics.pstdev(intervals) / statistics.fmean(intervals),
                               rel=1e-12, abs=1e-15)


def test_packaged_model_says_it_was_fit_on_simulated_data() -> None:
    m = ScoringModel.load()
    assert m.version
    assert "simulat" in m.provenance["trained_on"]
    assert m.provenance["held_out_calibration"]["auc_gunfire"] > 0.9


def test_file_round_trip(tmp_path: Path) -> None:
    m = packaged_model()
    path = tmp_path / "model.json"
    m.save(path)
    again = ScoringModel.load(path)
    assert again == m
    ev = shot(intervals=(0.4, 0.41))
    assert again.score(ev) == m.score(ev)


def _model_dict() -> dict:
    return packaged_model().to_dict()


def _bad(**changes: object) -> dict:
    d = _model_dict()
    d.update(changes)
    return d


BAD_FILES = [
    # a future format this build cannot read
    ("future_version", _bad(format_version=2), "format_version"),
    # not a model file at all
    ("wrong_format", _bad(format="something-else"), "format"),
    # weights missing
    ("no_weights", {k: v for k, v in _model_dict().items() if k != "weights"}, "weights"),
    # weight vector shorter than the feature list
    ("short_weights", _bad(weights={**_model_dict()["weights"], "gunfire": [0.0]}), "gunfire"),
    # a feature this build does not know how to compute
    ("unknown_feature", _bad(features=[{"name": "loudness", "center": 0, "scale": 1}]),
     "loudness"),
    # thresholds in the wrong order
    ("inverted_thresholds",
     _bad(thresholds={"gunfire": 0.3, "probable_gunfire": 0.6, "fireworks": 0.5}), "thresholds"),
    # a non-number where a number belongs
    ("string_intercept", _bad(intercepts={"gunfire": "x", "fireworks": 0, "other": 0}),
     "intercepts"),
    # a neutral feature that the model does not have
    ("unknown_neutral", _bad(fit={"l2": 1.0, "neutral_features": ["loudness"]}),
     "neutral_features"),
    # a neutral feature given a weight (it would then carry evidence after all)
    ("weighted_neutral",
     _bad(fit={"l2": 1.0, "neutral_features": ["log_residual"]}), "log_residual"),
]


@pytest.mark.parametrize(("name", "content", "needle"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_raises_value_error_naming_the_problem(
    tmp_path: Path, name: str, content: dict, needle: str
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=needle) as info:
        ScoringModel.load(path)
    assert str(path) in str(info.value)


def test_not_json_and_missing_file_raise_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        ScoringModel.load(bad)
    with pytest.raises(ValueError, match="cannot read"):
        ScoringModel.load(tmp_path / "absent.json")


def test_feature_columns_are_the_incident_features() -> None:
    assert "source_level_db" in FEATURE_COLUMNS and "interval_cv" in FEATURE_COLUMNS


def test_every_standardised_input_is_clipped_to_the_range_seen_in_training() -> None:
    # A cadence no firearm or firework has (a million rounds a day apart: an artefact of how
    # rounds were joined) must not swing the class: it scores as the most extreme cadence
    # trained on.
    model = packaged_model()
    names = [f.name for f in model.features]
    spec = model.features[names.index("log_interval")]
    assert math.isfinite(spec.low) and math.isfinite(spec.high)
    artefact = IncidentFeatures(rounds=10**6, interval_median_s=1e5, interval_cv=0.01)
    x = model.inputs(artefact)
    assert x[names.index("log_interval")] == spec.high
    for value, f in zip(x, model.features, strict=True):
        assert f.low <= value <= f.high
    rounds = model.features[names.index("log_rounds")]
    assert x[names.index("log_rounds")] == rounds.high
    edge = replace(
        artefact, interval_median_s=10 ** (spec.high * spec.scale + spec.center),
        rounds=round(2 ** (rounds.high * rounds.scale + rounds.center)),
    )
    assert model.probabilities(artefact) == pytest.approx(model.probabilities(edge))


def test_a_model_file_keeps_its_training_range_and_refuses_an_inverted_one() -> None:
    model = packaged_model()
    again = ScoringModel.from_dict(model.to_dict())
    assert again.features == model.features
    broken = model.to_dict()
    broken["features"][0]["low"], broken["features"][0]["high"] = 1.0, -1.0
    with pytest.raises(ValueError, match=r"features\[0\]: low must be <= high"):
        ScoringModel.from_dict(broken)
