"""Specification of the synthetic city (services/locator/simulate.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from services.locator.simulate import (
    MAX_RANGE_M,
    MILE_M,
    SCENARIO_KINDS,
    CityArray,
    Scenario,
    build_array,
    mixed_traffic,
    scenario,
    to_detection_in,
)
from shared.geo import LocalFrame, speed_of_sound
from shared.schemas import DetectionIn

START = datetime(2026, 7, 4, 21, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def array() -> CityArray:
    return build_array(density_per_sq_mi=15, area_sq_mi=2.0, seed=4)


def run(kind: str, array: CityArray, seed: int = 1, **kw: object) -> Scenario:
    return scenario(kind, array, start=START, rng=np.random.default_rng(seed), **kw)


def test_array_density_extent_and_rooftops(array: CityArray) -> None:
    assert len(array.sensors) == 30
    enu = array.enu()
    half = np.sqrt(2.0) * MILE_M / 2
    assert np.abs(enu[:, :2]).max() <= half
    heights = enu[:, 2] - array.ground_alt_m
    assert heights.min() >= 8.0 - 0.01 and heights.max() <= 40.0 + 0.01
    assert len({s.sensor_id for s in array.sensors}) == len(array.sensors)
    assert build_array(seed=4) == build_array(seed=4)


@pytest.mark.parametrize("kind", ["shot", "burst", "two_shooters", "fireworks"])
def test_direct_arrivals_match_geometry_within_timing_noise(array: CityArray, kind: str) -> None:
    sigma = 1e-4
    s = run(kind, array, timing_noise_s=sigma)
    c = speed_of_sound(s.temperature_c)
    frame = LocalFrame(*array.center)
    events = {e.event_id: e for e in s.truth}
    checked = 0
    for det, truth in zip(s.detections, s.pulse_truth, strict=True):
        assert truth.path == "direct"
        ev = events[truth.event_id]
        src = frame.to_enu(ev.lat, ev.lon, ev.alt_m)
        pos = frame.to_enu(det.position.lat, det.position.lon, det.position.alt_m)
        dist = float(np.linalg.norm(pos - src))
        travel = (det.arrival_time - ev.times[truth.round_index]).total_seconds()
        # 5 sigma plus the microsecond rounding of both instants
        assert abs(travel - dist / c) < 5 * sigma + 2e-6
        assert dist <= MAX_RANGE_M
        checked += 1
    assert checked >= 4


def test_seeded_determinism(array: CityArray) -> None:
    assert run("mixed", array, seed=9, duration_s=120) == run("mixed", array, seed=9,
                                                               duration_s=120)
    assert run("burst", array, seed=9).detections != run("burst", array, seed=10).detections


@pytest.mark.parametrize("kind", SCENARIO_KINDS)
def test_every_kind_yields_sorted_valid_detections(array: CityArray, kind: str) -> None:
    s = run(kind, array, duration_s=120)
    times = [d.arrival_time for d in s.detections]
    assert times == sorted(times)
    assert len(s.pulse_truth) == len(s.detections) > 0
    assert len({d.detection_id for d in s.detections}) == len(s.detections)
    for d in s.detections:
        assert d.received_at > d.arrival_time or d.sensor_id in s.bad_clock_sensors
        assert d.temperature_c is not None


def test_burst_has_several_rounds_at_a_steady_cadence(array: CityArray) -> None:
    (ev,) = run("burst", array).truth
    gaps = np.diff([t.timestamp() for t in ev.times])
    assert ev.kind == "gunfire" and 3 <= len(ev.times) <= 8
    assert gaps.min() >= 0.05 and gaps.max() <= 3 * 1.6


def test_two_shooters_are_apart_and_overlap_in_time(array: CityArray) -> None:
    a, b = run("two_shooters", array).truth
    frame = LocalFrame(*array.center)
    apart = np.linalg.norm(frame.to_enu(a.lat, a.lon) - frame.to_enu(b.lat, b.lon))
    assert 300 - 1 <= apart <= 900 + 1
    assert b.times[0] < a.times[-1]


def test_echoes_are_later_weaker_copies_at_the_same_sensor(array: CityArray) -> None:
    s = run("echoes", array)
    direct = {(d.sensor_id, t.round_index): d for d, t in zip(s.detections, s.pulse_truth,
                                                              strict=True) if t.path == "direct"}
    echoes = [(d, t) for d, t in zip(s.detections, s.pulse_truth, strict=True)
              if t.path == "echo"]
    assert echoes
    for d, t in echoes:
        first = direct[(d.sensor_id, t.round_index)]
        assert d.arrival_time > first.arrival_time
        assert d.features.peak_db <= first.features.peak_db


def test_diffracted_arrivals_are_late(array: CityArray) -> None:
    s = run("diffraction", array, seed=3)
    c = speed_of_sound(s.temperature_c)
    events = {e.event_id: e for e in s.truth}
    late = [(d, t) for d, t in zip(s.detections, s.pulse_truth, strict=True)
            if t.path == "diffracted"]
    assert late
    for d, t in late:
        travel = (d.arrival_time - events[t.event_id].times[t.round_index]).total_seconds()
        assert travel - t.distance_m / c > 0.002


def test_noise_pulses_belong_to_no_event(array: CityArray) -> None:
    s = run("noise", array)
    noise = [t for t in s.pulse_truth if t.path == "noise"]
    assert noise and all(t.event_id is None for t in noise)


def test_bad_clock_sensor_reports_shifted_times(array: CityArray) -> None:
    s = run("bad_clock", array, seed=2)
    (bad,) = s.bad_clock_sensors
    offsets = {
        abs((d.arrival_time - t.true_arrival).total_seconds())
        for d, t in zip(s.detections, s.pulse_truth, strict=True) if d.sensor_id == bad
    }
    good = [
        abs((d.arrival_time - t.true_arrival).total_seconds())
        for d, t in zip(s.detections, s.pulse_truth, strict=True) if d.sensor_id != bad
    ]
    assert offsets and min(offsets) >= 0.05
    assert max(good) < 1e-5


def test_fireworks_and_gunfire_features_differ(array: CityArray) -> None:
    s = mixed_traffic(array, start=START, duration_s=3600, shots_per_hour=20,
                      fireworks_per_hour=20, noise_per_sensor_hour=0,
                      rng=np.random.default_rng(5), echo_prob=0, diffraction_prob=0)
    kinds = {e.event_id: e.kind for e in s.truth}
    dur = {"gunfire": [], "fireworks": []}
    for d, t in zip(s.detections, s.pulse_truth, strict=True):
        if kinds.get(t.event_id) in dur:
            dur[kinds[t.event_id]].append(d.features.duration_ms)
    assert np.median(dur["fireworks"]) > 3 * np.median(dur["gunfire"])


def test_far_sensors_hear_less(array: CityArray) -> None:
    s = mixed_traffic(array, start=START, duration_s=3600, shots_per_hour=40,
                      fireworks_per_hour=0, noise_per_sensor_hour=0,
                      rng=np.random.default_rng(6), echo_prob=0, diffraction_prob=0)
    d = np.array([t.distance_m for t in s.pulse_truth], dtype=float)
    frame, enu = LocalFrame(*array.center), array.enu()
    near = far = heard_near = heard_far = 0
    for e in s.truth:
        dist = np.linalg.norm(enu - frame.to_enu(e.lat, e.lon, e.alt_m), axis=1)
        near += len(e.times) * int((dist < 500).sum())
        far += len(e.times) * int(((dist > 1200) & (dist < 2000)).sum())
    heard_near, heard_far = int((d < 500).sum()), int(((d > 1200) & (d < 2000)).sum())
    assert heard_near / near > 0.8
    assert heard_far / max(far, 1) < heard_near / near


def test_feature_modes(array: CityArray) -> None:
    none = run("shot", array, feature_mode="none")
    assert all(d.features.peak_db is None for d in none.detections)
    level = run("shot", array, feature_mode="level_only")
    assert all(d.features.peak_db is not None and d.features.duration_ms is None
               for d in level.detections)


def test_to_detection_in_is_a_valid_sensor_post(array: CityArray) -> None:
    det = run("shot", array).detections[0]
    body = to_detection_in(det)
    parsed = DetectionIn.model_validate(body)
    assert parsed.arrival_time == det.arrival_time  # microseconds survive
    assert parsed.features() == det.features
    assert parsed.sensor_id == det.sensor_id


def test_unknown_kind_is_refused(array: CityArray) -> None:
    with pytest.raises(ValueError, match="unknown scenario kind"):
        run("earthquake", array)


def test_real_array_effects_duplicate_reports_lower_later_rounds_and_shadow_a_side() -> None:
    from services.locator.simulate import ArrayEffects, build_array, mixed_traffic

    array = build_array(density_per_sq_mi=12, area_sq_mi=2.0, seed=5)
    start = datetime(2026, 7, 4, 21, 0, tzinfo=UTC)

    def stream(effects: ArrayEffects | None):
        return mixed_traffic(
            array, start=start, duration_s=1800.0, shots_per_hour=60.0, fireworks_per_hour=0.0,
            noise_per_sensor_hour=0.0, other_per_hour=0.0, rng=np.random.default_rng(5),
            echo_prob=0.0, diffraction_prob=0.0, effects=effects,
        )

    plain = stream(None)
    assert plain.detections == stream(ArrayEffects()).detections  # all off: the same draws
    doubled = stream(ArrayEffects(duplicate_prob=0.5))
    by_sensor: dict[str, list[datetime]] = {}
    for d in doubled.detections:
        by_sensor.setdefault(d.sensor_id, []).append(d.arrival_time)
    pairs = sum(
        1 for times in by_sensor.values()
        for a, b in itertools.pairwise(sorted(times))
        if (b - a).total_seconds() <= 0.001
    )
    assert pairs > 0.3 * len(plain.detections)  # about half re-reported within 1 ms
    for gunfire in (e for e in plain.truth if e.kind == "gunfire"):
        # every round at least one firearm cycle after the previous one
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(gunfire.times)]
        assert all(gap >= 0.030 for gap in gaps)

    def heard_per_round(scene) -> dict[int, int]:
        count: dict[int, int] = {}
        for t in scene.pulse_truth:
            count[t.round_index] = count.get(t.round_index, 0) + 1
        return count

    quiet = heard_per_round(stream(ArrayEffects(reverb_db=6.0)))
    loud = heard_per_round(plain)
    # first rounds heard alike (the draws after them differ), later rounds by fewer sensors
    assert abs(quiet[0] - loud[0]) < 0.1 * loud[0] and quiet[2] < 0.8 * loud[2]
    shadowed = stream(ArrayEffects(shadow_share=0.3, shadow_db=30.0))
    assert len(shadowed.detections) < 0.95 * len(plain.detections)  # one side hears less
