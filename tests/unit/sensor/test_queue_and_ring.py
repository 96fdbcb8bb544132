"""The on-disk queue (survives a restart, idempotent, bounded) and the in-memory ring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.sensor.queue import DetectionQueue
from services.sensor.ring import AudioRing


def body(n: int) -> dict:
    return {"detection_id": f"on-{n}", "sensor_id": "s", "arrival_time": f"t{n}"}


def test_a_queued_detection_survives_a_restart(tmp_path: Path) -> None:
    q = DetectionQueue(tmp_path / "q.sqlite3")
    assert q.put(body(1)) and q.put(body(2))
    q.close()
    again = DetectionQueue(tmp_path / "q.sqlite3")
    assert [item.body for item in again.peek(10)] == [body(1), body(2)]
    again.remove(["on-1"])
    assert [item.detection_id for item in again.peek(10)] == ["on-2"]


def test_putting_the_same_detection_twice_keeps_one(tmp_path: Path) -> None:
    q = DetectionQueue(tmp_path / "q.sqlite3")
    assert q.put(body(1))
    assert not q.put(body(1))
    assert len(q) == 1


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    q = DetectionQueue(tmp_path / "q.sqlite3", capacity=3)
    for n in range(5):
        q.put(body(n))
    assert [item.detection_id for item in q.peek(10)] == ["on-2", "on-3", "on-4"]
    assert q.dropped == 2


def test_the_ring_holds_only_the_last_seconds() -> None:
    ring = AudioRing(sample_rate=100, seconds=1.0)
    for start in range(0, 350, 50):
        block = np.arange(start, start + 50, dtype=float)
        ring.append(block, -block)
    assert (ring.start, ring.end) == (250, 350)
    raw, hp = ring.window(300, 320)
    assert raw.tolist() == list(range(300, 320)) and hp.tolist() == [-v for v in range(300, 320)]
    with pytest.raises(ValueError, match="not in the ring"):
        ring.window(200, 260)  # overwritten: older than a second
    with pytest.raises(ValueError, match="at most 10 s"):
        AudioRing(12_000, 60.0)  # never a long recording
