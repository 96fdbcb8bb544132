"""The drill's pure parts: what it posts (every pulse an exercise, in arrival order) and how a
capture is scored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.drill import DrillError, DrillSensor, plan, read_capture, read_sensors, score
from services.locator.simulate import build_array
from shared.schemas import DetectionIn, format_time

ARRAY = build_array(seed=2)
SENSORS = [DrillSensor(s.sensor_id, "t" * 32, s.lat, s.lon, s.alt_m) for s in ARRAY.sensors]
START = datetime(2026, 12, 8, 1, 0, 0, tzinfo=UTC)


def test_every_posted_pulse_is_a_valid_exercise_detection_in_arrival_order() -> None:
    situation, posts = plan(SENSORS, "burst", start=START, seed=1, drill_id="drill-x")
    assert len(posts) == len(situation.detections) > 0
    assert [p[0] for p in posts] == sorted(p[0] for p in posts)
    for _, sensor_id, item in posts:
        detection = DetectionIn.model_validate(item)
        assert detection.exercise is True and detection.sensor_id == sensor_id
        assert detection.detection_id.startswith("drill-x-")


def test_an_unknown_scenario_or_a_bad_sensors_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DrillError, match="--scenario"):
        plan(SENSORS, "mixed", start=START, seed=1, drill_id="d")
    bad = tmp_path / "s.json"
    bad.write_text('[{"sensor_id": "a"}]')
    with pytest.raises(DrillError, match="--tokens: sensor 0 needs"):
        read_sensors(bad)
    with pytest.raises(DrillError, match="does not exist"):
        read_sensors(tmp_path / "missing.json")


SHOT = START + timedelta(seconds=1)
TRUTH = {
    "drill_id": "d", "scenario": "shot",
    "events": [{"event_id": "e1", "kind": "gunfire", "lat": 40.44, "lon": -79.99, "alt_m": 0,
                "rounds": 2,
                "shot_times": [SHOT.isoformat(), (SHOT + timedelta(seconds=0.3)).isoformat()]}],
}


def _alert(incident: str, *, lat: float = 40.44, exercise: bool = True, version: int = 1,
           rounds: int = 2, shot: datetime = SHOT) -> dict[str, Any]:
    return {"incident_id": incident, "version": version, "event": "created",
            "classification": "gunfire", "rounds": rounds, "shot_time": format_time(shot),
            "location": {"lat": lat, "lon": -79.99, "radius95_m": 10.0}, "exercise": exercise}


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        # the drill's incident, 0.1 m off, 4 s after the shot: detected, rounds exact
        ([(4.0, _alert("i1"))], {"detected": 1, "rounds_exact": 1, "false_alerts": 0,
                                "not_marked_exercise": 0, "median_latency_s": 3.0}),
        # first version at 4 s with 1 round, second at 6 s with 2: latency of the first,
        # rounds of the latest
        ([(4.0, _alert("i1", rounds=1)), (6.0, _alert("i1", version=2))],
         {"detected": 1, "rounds_exact": 1, "median_latency_s": 3.0}),
        # the drill's shot delivered as real: a defect, counted
        ([(4.0, _alert("i1", exercise=False))], {"detected": 1, "not_marked_exercise": 1}),
        # an exercise incident 2 km away matches nothing: a false alert, shot missed
        ([(4.0, _alert("i2", lat=40.46))], {"detected": 0, "false_alerts": 1}),
        # a real alert of another shot meanwhile is neither false nor the drill's
        ([(4.0, _alert("i1")), (5.0, _alert("r", lat=40.46, exercise=False))],
         {"detected": 1, "false_alerts": 0, "real_alerts_meanwhile": 1}),
        # a first shot 5 s off is another shot
        ([(9.0, _alert("i1", shot=SHOT + timedelta(seconds=5)))], {"detected": 0}),
    ],
)
def test_score(capture: list[tuple[float, dict[str, Any]]], expected: dict[str, Any]) -> None:
    report = score(TRUTH, [(START + timedelta(seconds=t), a) for t, a in capture])
    assert {k: report[k] for k in expected} == expected


def test_a_capture_file_holds_received_at_and_the_native_json_body(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    body = {"type": "incident.created", "data": _alert("i1")}
    path.write_bytes(orjson.dumps({"received_at": format_time(START), "body": body}) + b"\n\n")
    assert read_capture(path) == [(START, body["data"])]
    path.write_text("not json\n")
    with pytest.raises(DrillError, match="line 1"):
        read_capture(path)
