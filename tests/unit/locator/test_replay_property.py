"""Decisions do not depend on when pulses arrived: a property test of the engine.

A recorded topic (simulated mixed traffic: bursts, fireworks, noise, echoes, a bad clock) is
replayed in its order the way the service reads it: in chunks of random size, each chunk's
windows closed against the latest ``received_at`` read (the event clock), and with a kill
at a random point after which a fresh engine re-reads from the last retained offset (what
the service commits). The incidents must be those of an uninterrupted run, record by record:
the same ids, and every (incident, version) both runs published is the same record.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.locator.config import LocatorConfig
from services.locator.engine import ZoneEngine
from services.locator.scoring import score
from services.locator.simulate import REAL_ARRAY_EFFECTS, build_array, mixed_traffic
from shared.schemas import DetectionRecord, IncidentRecord

START = datetime(2026, 7, 4, 21, 0, 0, tzinfo=UTC)
CONFIG = LocatorConfig()


@pytest.fixture(scope="module")
def topic() -> list[DetectionRecord]:
    array = build_array(density_per_sq_mi=12, area_sq_mi=1.0, seed=3)
    scene = mixed_traffic(
        array, start=START, duration_s=240.0, shots_per_hour=360.0, fireworks_per_hour=60.0,
        noise_per_sensor_hour=120.0, rng=np.random.default_rng(3), bad_clock_sensors=1,
        effects=REAL_ARRAY_EFFECTS,
    )
    # One detection in ten reaches ingest 1-5 s late (a sensor re-posting after ingest
    # restarted, a relay's backlog); the topic's order is the order ingest accepted them.
    rng = np.random.default_rng(4)
    late = rng.random(len(scene.detections)) < 0.1
    delays = rng.uniform(1.0, 5.0, len(scene.detections))
    detections = [
        d.model_copy(update={"received_at": d.received_at + timedelta(seconds=float(s))})
        if is_late else d
        for d, is_late, s in zip(scene.detections, late, delays, strict=True)
    ]
    return sorted(detections, key=lambda d: (d.received_at, d.key))


def _wire(record: IncidentRecord) -> str:
    return record.model_copy(update={"published_at": START}).model_dump_json()


def uninterrupted(topic: list[DetectionRecord]) -> dict[tuple[str, int], str]:
    engine = ZoneEngine("z", CONFIG, score)
    out: dict[tuple[str, int], str] = {}
    for offset, det in enumerate(topic):
        engine.add(det, offset, det.received_at)
        for r in engine.poll(det.received_at):
            out[r.incident_id, r.version] = _wire(r)
    for r in engine.flush():
        out[r.incident_id, r.version] = _wire(r)
    return out


def chunked(
    topic: list[DetectionRecord], chunks: list[int], kill_at: int
) -> dict[tuple[str, int], str]:
    """Read in ``chunks`` (cycled), closing windows after each against the event clock; at
    record ``kill_at`` the engine dies and a new one re-reads from its retained offset."""
    out: dict[tuple[str, int], str] = {}
    engine = ZoneEngine("z", CONFIG, score)
    offset, k, killed = 0, 0, False
    while offset < len(topic):
        size = chunks[k % len(chunks)]
        k += 1
        batch = range(offset, min(offset + size, len(topic)))
        for i in batch:
            engine.add(topic[i], i, topic[i].received_at)
        clock = topic[batch[-1]].received_at
        for r in engine.poll(clock):
            out[r.incident_id, r.version] = _wire(r)
        offset = batch[-1] + 1
        if not killed and offset >= kill_at:
            killed = True
            retained = engine.min_retained_offset()
            engine = ZoneEngine("z", CONFIG, score)  # the successor
            offset = offset if retained is None else retained
    for r in engine.flush():
        out[r.incident_id, r.version] = _wire(r)
    return out


@pytest.fixture(scope="module")
def reference(topic: list[DetectionRecord]) -> dict[tuple[str, int], str]:
    return uninterrupted(topic)


def _final(published: dict[tuple[str, int], str]) -> dict[str, tuple[int, int, str]]:
    """incident -> (last version, rounds, classification)."""
    last: dict[str, tuple[int, str]] = {}
    for (inc, version), body in published.items():
        if version >= last.get(inc, (0, ""))[0]:
            last[inc] = (version, body)
    out = {}
    for inc, (version, body) in last.items():
        record = IncidentRecord.model_validate_json(body)
        out[inc] = (version, record.rounds, record.classification)
    return out


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.lists(st.integers(1, 400), min_size=1, max_size=6))
def test_a_replay_in_any_chunks_gives_the_uninterrupted_incidents_byte_for_byte(
    topic: list[DetectionRecord], reference: dict[tuple[str, int], str], chunks: list[int],
) -> None:
    replayed = chunked(topic, chunks, kill_at=len(topic) + 1)
    assert {i for i, _ in replayed} == {i for i, _ in reference}  # same incidents, same ids
    for key, body in replayed.items():
        if key in reference:
            assert body == reference[key]  # every version both published: byte for byte
    assert _final(replayed) == _final(reference)  # and every incident ends where it ended


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(st.integers(1, 400), min_size=1, max_size=6),
    kill_fraction=st.floats(0.05, 0.95),
)
def test_a_kill_and_a_replay_from_the_retained_offset_gives_the_same_incidents(
    topic: list[DetectionRecord], reference: dict[tuple[str, int], str], chunks: list[int],
    kill_fraction: float,
) -> None:
    # The same incidents, ids, versions, round counts and classes. (Not yet byte for byte:
    # a successor does not know which second reports of one onset the dead engine had
    # dropped against pulses below the retained offset, and a fit that then holds one can
    # differ by microseconds; see docs/locator-rules.md.)
    replayed = chunked(topic, chunks, int(kill_fraction * len(topic)))
    assert {i for i, _ in replayed} == {i for i, _ in reference}
    assert _final(replayed) == _final(reference)
