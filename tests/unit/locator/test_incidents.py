"""Incidents: deterministic ids, which round updates which incident, wire records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.locator.config import LocatorConfig
from services.locator.evidence import Score
from services.locator.incidents import (
    IncidentTracker,
    LocatedRound,
    incident_id,
    inverse_2x2,
    same_kind,
    to_record,
)

T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
CFG = LocatorConfig(update_window_s=60.0, update_distance_m=60.0)
LAT, LON = 40.4406, -79.9959
M_PER_DEG_LAT = 111_000.0


def rnd(seconds: float, north_m: float = 0.0, keys: tuple[str, ...] = ("s1/a", "s2/b")):
    return LocatedRound(
        shot_time=T + timedelta(seconds=seconds),
        lat=LAT + north_m / M_PER_DEG_LAT,
        lon=LON,
        alt_m=250.0,
        covariance_m2=((1.0, 0.0), (0.0, 1.0)),
        radius95_m=6.5,
        detection_keys=keys,
        sensors_used=("s1", "s2", "s3", "s4"),
        sensors_rejected=("s9",),
        residual_rms_s=0.002,
        first_received_at=T + timedelta(seconds=seconds + 0.5),
        offsets=(7, 8),
        evidence=(),
    )


def test_incident_id_depends_on_zone_and_keys_not_their_order() -> None:
    a = incident_id("z1", ["s2/b", "s1/a"])
    assert a == incident_id("z1", ["s1/a", "s2/b"])
    assert a != incident_id("z2", ["s1/a", "s2/b"])
    assert a != incident_id("z1", ["s1/a", "s2/c"])


@pytest.mark.parametrize(
    ("later_s", "north_m", "same"),
    [
        (0.8, 0.0, True),  # next round of a burst, same spot
        (45.0, 30.0, True),  # within the window and within 60 m
        (59.9, 59.0, True),  # both just inside the limits
        (61.0, 0.0, False),  # too late: a new incident
        (10.0, 75.0, False),  # too far: another shooter
        (-5.0, 0.0, True),  # fired slightly earlier (far-away first arrival decided later)
    ],
)
def test_round_updates_an_open_incident_only_within_time_and_distance(
    later_s: float, north_m: float, same: bool
) -> None:
    tracker = IncidentTracker("z1", CFG)
    first, event1 = tracker.add_round(rnd(0.0))
    inc, event2 = tracker.add_round(rnd(later_s, north_m, keys=("s1/x",)))
    assert event1 == "created"
    assert (event2 == "updated") is same
    assert (inc.incident_id == first.incident_id) is same
    assert inc.version == (2 if same else 1)


def test_expired_incidents_are_forgotten_and_cannot_be_updated() -> None:
    tracker = IncidentTracker("z1", CFG)
    tracker.add_round(rnd(0.0))
    assert tracker.expire(T + timedelta(seconds=59)) == []
    assert len(tracker.expire(T + timedelta(seconds=61))) == 1
    assert tracker.open_incidents == []


def test_the_oldest_shot_and_lowest_offset_of_the_open_incidents() -> None:
    # What the engine asks after every detection (when may poll forget an incident; which
    # offsets must a commit keep): answered over the open incidents only, None when none.
    tracker = IncidentTracker("z1", CFG)
    assert (tracker.earliest_last_shot(), tracker.min_offset()) == (None, None)
    tracker.add_round(replace(rnd(0.0), offsets=(40, 41)))  # incident A
    b = rnd(10.0, north_m=500.0, keys=("s3/c", "s4/d"))  # (its own keys: its own incident id)
    tracker.add_round(replace(b, offsets=(12, 30)))  # incident B, elsewhere
    assert (tracker.earliest_last_shot(), tracker.min_offset()) == (T, 12)
    tracker.add_round(replace(rnd(20.0, keys=("s1/e",)), offsets=(50,)))  # A's 2nd round at 20 s
    assert (tracker.earliest_last_shot(), tracker.min_offset()) == (T + timedelta(seconds=10), 12)
    tracker.expire(T + timedelta(seconds=75))  # B (last shot 10 s) is gone, A stays
    assert (tracker.earliest_last_shot(), tracker.min_offset()) == (T + timedelta(seconds=20), 40)
    assert tracker.expire(T + timedelta(seconds=79)) == []  # A expires only after 80 s
    (a,) = tracker.open_incidents
    tracker.forget(a.incident_id)
    assert (tracker.earliest_last_shot(), tracker.min_offset()) == (None, None)


def test_round_intervals_follow_shot_time_even_when_rounds_are_decided_out_of_order() -> None:
    # A round heard first by a far sensor can be decided after a later one: the cadence the
    # scorer sees is still the shots' own, asked again after each update.
    tracker = IncidentTracker("z1", CFG)
    inc, _ = tracker.add_round(rnd(0.0, keys=("s1/a",)))
    assert inc.round_intervals_s() == ()
    for seconds, expected in [
        (0.5, (0.5,)),
        (0.25, (0.25, 0.25)),  # decided after the 0.5 s round, fired before it
        (1.75, (0.25, 0.25, 1.25)),
    ]:
        inc, event = tracker.add_round(rnd(seconds, keys=(f"s1/{seconds}",)))
        assert event == "updated"
        assert inc.round_intervals_s() == pytest.approx(expected, abs=1e-9)


def test_record_carries_every_round_and_combines_their_locations() -> None:
    tracker = IncidentTracker("z1", CFG)
    tracker.add_round(rnd(0.0))
    inc, event = tracker.add_round(rnd(1.0, north_m=10.0, keys=("s3/c",)))
    rec = to_record(inc, event, Score(0.9, "gunfire"), T + timedelta(seconds=3), CFG)
    assert (rec.version, rec.rounds, rec.event) == (2, 2, "updated")
    assert rec.shot_time == T and rec.last_shot_time == T + timedelta(seconds=1)
    assert [r.detection_keys for r in rec.round_details] == [["s1/a", "s2/b"], ["s3/c"]]
    # equal covariances: the combined location is the midpoint (5 m north)
    assert (rec.location.lat - LAT) * M_PER_DEG_LAT == pytest.approx(5.0, abs=0.1)
    assert rec.first_detection_received_at == T + timedelta(seconds=0.5)
    assert rec.sensors_used == ["s1", "s2", "s3", "s4"] and rec.sensors_rejected == ["s9"]
    assert rec.published_at == T + timedelta(seconds=3)


@pytest.mark.parametrize(
    "matrix",
    [
        ((4.0, 0.0), (0.0, 9.0)),  # independent east and north errors
        ((4.0, 3.9), (3.9, 4.0)),  # strongly correlated: a long thin ellipse
        ((1e-4, 2e-5), (2e-5, 3e-4)),  # a centimetre fix
        ((2.5e5, -1e5), (-1e5, 1e5)),  # a poor fix hundreds of metres wide
    ],
)
def test_inverse_2x2_agrees_with_pinv_on_well_conditioned_covariances(matrix) -> None:
    expected = np.linalg.pinv(np.array(matrix))
    assert np.allclose(inverse_2x2(matrix), expected, rtol=1e-12, atol=0)
    assert np.allclose(inverse_2x2(np.array(matrix)), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "matrix",
    [
        ((4.0, 2.0), (2.0, 1.0)),  # rank 1: all the uncertainty along one line
        ((0.0, 0.0), (0.0, 0.0)),  # no information at all
        ((1.0, 0.0), (0.0, 0.0)),  # nothing known north-south
    ],
)
def test_inverse_2x2_of_a_singular_matrix_is_its_pseudo_inverse(matrix) -> None:
    # (A closed-form inverse would divide by zero: these must stay finite, as pinv gives.)
    assert np.array_equal(inverse_2x2(matrix), np.linalg.pinv(np.array(matrix)))


@pytest.mark.parametrize(
    ("later_s", "absorbed"),
    [
        (0.029, True),  # 29 ms: faster than any firearm cycles, the same round located twice
        (-0.029, True),  # (either order)
        (0.031, False),  # 31 ms: a very fast automatic's next round
        (0.5, False),
    ],
)
def test_two_rounds_closer_than_a_firearm_cycle_are_one_round(
    later_s: float, absorbed: bool
) -> None:
    tracker = IncidentTracker("z1", CFG)
    first, _ = tracker.add_round(rnd(0.0))
    added = tracker.add_round(rnd(later_s, keys=("s1/x",)))
    if absorbed:
        assert added is None
        assert first.version == 1 and len(first.rounds) == 1
    else:
        assert added is not None and added[1] == "updated"
        assert len(first.rounds) == 2


@pytest.mark.parametrize(
    ("first_kind", "later_kind", "same"),
    [
        ("gunfire", "gunfire", True),
        ("gunfire", "probable_gunfire", True),
        ("gunfire", "other", True),  # "other" contradicts nothing
        ("gunfire", "fireworks", False),  # a fireworks source by the alerted gunfire: new
        ("probable_gunfire", "fireworks", False),
        ("fireworks", "gunfire", True),  # a show's odd round is not split off as an alert
        ("fireworks", "fireworks", True),
        (None, "fireworks", True),  # unscored: no evidence of another kind
    ],
)
def test_an_update_only_adds_rounds_of_the_same_kind_of_source(
    first_kind: str | None, later_kind: str, same: bool
) -> None:
    # Issue 22: an incident alerted as gunfire must not be turned into fireworks by the
    # rounds of another source 20 s later at the same spot.
    tracker = IncidentTracker("z1", CFG)
    first, _ = tracker.add_round(replace(rnd(0.0), kind=first_kind))
    later = replace(rnd(20.0, keys=("s1/x",)), kind=later_kind)
    added = tracker.add_round(later, lambda open_inc: same_kind(open_inc.first.kind, later.kind))
    assert added is not None
    inc, event = added
    assert (inc is first) is same
    assert event == ("updated" if same else "created")
    assert len(first.rounds) == (2 if same else 1)
