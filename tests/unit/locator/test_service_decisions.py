"""The locator service's pure decisions (services/locator/service.py), as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.locator.config import LocatorConfig
from services.locator.health import SensorHealth
from services.locator.service import (
    LowestRetained,
    commit_offset,
    decode_detection,
    health_changes,
    poll_clock,
    should_pause,
)
from shared.schemas import DetectionRecord, Position

T = datetime(2026, 11, 25, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("next_offset", "retained", "expected"),
    [
        # nothing consumed is held by any zone: everything read is finished
        (120, [None, None], 120),
        # no zone on the partition at all (only poison / dead letters so far)
        (7, [], 7),
        # one zone still needs offset 100 (an open incident's first round): stop there
        (120, [100, None], 100),
        # several zones share the partition: the earliest need wins
        (120, [115, 100, 118], 100),
        # a zone needs the last record read: commit up to (not past) it
        (120, [119], 119),
        # never beyond what was consumed, whatever an engine claims
        (120, [500], 120),
        # offset 0 is a real offset, not "nothing"
        (50, [0, None], 0),
    ],
)
def test_commit_offset_stops_at_the_earliest_retained_detection(
    next_offset: int, retained: list[int | None], expected: int
) -> None:
    assert commit_offset(next_offset, retained) == expected


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        # no zone has held anything
        ([], None),
        # one zone holds offset 40
        ([("a", 40)], 40),
        # the earliest of several zones
        ([("a", 40), ("b", 12), ("c", 77)], 12),
        # the earliest zone moves on (its window closed): the next earliest
        ([("a", 40), ("b", 12), ("b", 90)], 40),
        # the earliest zone holds nothing any more
        ([("a", 40), ("b", 12), ("b", None)], 40),
        # every zone drained
        ([("a", 40), ("b", 12), ("a", None), ("b", None)], None),
        # a zone holding nothing, then a new detection: its new offset counts
        ([("a", 40), ("a", None), ("a", 95)], 95),
        # the same offset reported twice, then moving on: no stale copy survives
        ([("a", 5), ("a", 5), ("a", 60), ("b", 70)], 60),
        # offset 0 is a real offset, not "nothing"
        ([("a", 0), ("b", 3)], 0),
    ],
)
def test_lowest_retained_is_the_earliest_offset_any_zone_still_holds(
    updates: list[tuple[str, int | None]], expected: int | None
) -> None:
    floors = LowestRetained()
    for zone, offset in updates:
        floors.update(zone, offset)
    assert floors.lowest() == expected


def test_lowest_retained_stays_exact_and_small_while_thousands_of_zones_churn() -> None:
    # One zone keeps an open incident's first offset while 2,000 others move on 50 times.
    floors = LowestRetained()
    floors.update("open", 10)
    held: dict[str, int] = {}
    for step in range(50):
        for z in range(2000):
            held[f"z{z}"] = 100 + step * 2000 + z
            floors.update(f"z{z}", held[f"z{z}"])
        assert floors.lowest() == 10
        # (while "open" holds the minimum, no lookup pops what the others left behind)
        assert len(floors._heap) <= 2 * 2001 + 64  # stale entries are dropped, not hoarded
    floors.update("open", None)
    assert floors.lowest() == min(held.values())


S = timedelta(seconds=0.1)  # the settle given


@pytest.mark.parametrize(
    ("event_clock", "caught_up", "paused", "caught_up_at", "expected"),
    [
        # live: nothing left to fetch, windows close by the wall clock
        (T - timedelta(seconds=1), True, False, None, T),
        # replaying a backlog: windows close by the latest received_at read so far (+ settle:
        # no pulse of a window is received within that much of its deadline)
        (T - timedelta(seconds=90), False, False, None, T - timedelta(seconds=90) + S),
        # backlog but paused for back-pressure: the wall clock, or the pause never ends
        (T - timedelta(seconds=90), False, True, None, T),
        # a sensor stamping the future cannot push windows ahead of the wall clock
        (T + timedelta(seconds=5), False, False, None, T),
        # nor can the settle
        (T - timedelta(seconds=0.05), False, False, None, T),
        # nothing read yet on the partition
        (None, False, False, None, T),
        # live, records arrived since the last fetch: what was closable when last caught up
        # (everything appended before then was read) stays closable
        (T - timedelta(seconds=0.3), False, False, T - timedelta(seconds=0.05),
         T - timedelta(seconds=0.05)),
        # ... but the event clock still counts when it is the later of the two
        (T - timedelta(seconds=0.12), False, False, T - timedelta(seconds=0.05),
         T - timedelta(seconds=0.02)),
        # caught up long ago, before a backlog built up: the backlog's own clock is later
        (T - timedelta(seconds=90), False, False, T - timedelta(seconds=600),
         T - timedelta(seconds=90) + S),
    ],
)
def test_poll_clock_follows_the_backlog_until_caught_up(
    event_clock: datetime | None,
    caught_up: bool,
    paused: bool,
    caught_up_at: datetime | None,
    expected: datetime,
) -> None:
    at = poll_clock(
        T, event_clock, caught_up=caught_up, paused=paused, caught_up_at=caught_up_at, settle=S
    )
    assert at == expected


@pytest.mark.parametrize(
    ("retained", "paused", "expected"),
    [
        (100, False, False),  # under the high mark: keep fetching
        (1001, False, True),  # above it: pause
        (1000, False, False),  # at it: still fine (pause only above)
        (600, True, True),  # paused, between the marks: stay paused (no flapping)
        (500, True, False),  # paused, down to the low mark: resume
        (0, True, False),  # drained
    ],
)
def test_should_pause_with_hysteresis(retained: int, paused: bool, expected: bool) -> None:
    assert should_pause(retained, paused, high=1000, low=500) is expected


def _record() -> dict:
    det = DetectionRecord(
        detection_id="d1",
        sensor_id="s1",
        zone="z",
        arrival_time=T,
        position=Position(lat=40.44, lon=-79.99, alt_m=200),
        received_at=T + timedelta(seconds=0.1),
    )
    return det.model_dump(mode="json")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{nope", "invalid JSON"),  # not JSON at all
        (b"[1, 2]", "invalid record: expected a JSON object"),  # JSON, not an object
        (None, "empty record"),  # a tombstone
        (orjson.dumps({**_record(), "schema_version": 2}), "unknown schema_version 2"),
        (orjson.dumps({k: v for k, v in _record().items() if k != "schema_version"}),
         "unknown schema_version None"),  # no version: never guessed
        (orjson.dumps({**_record(), "zone": "bad zone"}), "invalid detection record: zone"),
        (orjson.dumps({**_record(), "extra": 1}), "invalid detection record: extra"),
    ],
)
def test_decode_names_the_reason_of_poison(value: bytes | None, reason: str) -> None:
    decoded = decode_detection(value)
    assert isinstance(decoded, str)
    assert decoded.startswith(reason)


def test_decode_returns_a_valid_record_unchanged() -> None:
    decoded = decode_detection(orjson.dumps(_record()))
    assert isinstance(decoded, DetectionRecord)
    assert decoded.model_dump(mode="json") == _record()


CONFIG = LocatorConfig(health_min_samples=5, health_max_median_residual_s=0.01)


def _h(sensor_id: str, median_s: float, samples: int = 10, rejected: float = 0.0) -> SensorHealth:
    return SensorHealth(sensor_id, samples, median_s, rejected)


@pytest.mark.parametrize(
    ("flagged", "health", "new", "recovered"),
    [
        # a healthy array: nothing to say
        (set(), [_h("a", 0.001), _h("b", -0.002)], set(), set()),
        # a sensor's median residual drifts past the threshold: newly flagged
        (set(), [_h("a", 0.02), _h("b", 0.0)], {"a"}, set()),
        # still drifting and already flagged: not new (the warning is logged once)
        ({"a"}, [_h("a", 0.03)], set(), set()),
        # back within tolerance: recovered
        ({"a"}, [_h("a", 0.001)], set(), {"a"}),
        # drifting but too few solves to judge yet
        (set(), [_h("a", 0.05, samples=3)], set(), set()),
        # mostly rejected as inconsistent counts as unhealthy too
        (set(), [_h("a", 0.0, rejected=0.8)], {"a"}, set()),
    ],
)
def test_health_changes_report_transitions_only(
    flagged: set[str], health: list[SensorHealth], new: set[str], recovered: set[str]
) -> None:
    by_id = {h.sensor_id: h for h in health}
    assert health_changes(flagged, by_id, CONFIG) == (new, recovered)
