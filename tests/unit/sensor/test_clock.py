"""A live stream's onsets are timed from the system clock's anchors, not the sample count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from services.sensor.service import AudioStream

START = datetime(2026, 12, 8, tzinfo=UTC)


async def _none():  # pragma: no cover - never iterated
    yield np.zeros(0)


def test_a_drifting_sound_card_is_timed_by_the_disciplined_clock() -> None:
    """A card 50 ppm fast delivers 12,000.6 samples per true second; after an hour the
    sample count alone would be 180 ms (62 m of sound) off. The anchors keep it to µs,
    and the jitter of single callbacks averages out."""
    rate = 12_000
    stream = AudioStream(START, rate, _none())
    true_rate = rate * (1 + 50e-6)
    rng = np.random.default_rng(1)
    hour = int(3600 * true_rate)
    for k in range(600):  # the last minute's blocks of 100 ms, with ±0.2 ms callback jitter
        at = hour - (600 - k) * 1200
        jitter = timedelta(seconds=float(rng.uniform(-2e-4, 2e-4)))
        stream.anchors.append((at, START + timedelta(seconds=at / true_rate) + jitter))
    sample = hour + 600.5
    truth = START + timedelta(seconds=sample / true_rate)
    assert abs((stream.time_of(sample) - truth).total_seconds()) < 20e-6
    naive = START + timedelta(seconds=sample / rate)
    assert abs((naive - truth).total_seconds()) > 0.17


def test_a_file_is_timed_from_its_start() -> None:
    stream = AudioStream(START, 12_000, _none())
    assert stream.time_of(18_000.5) == START + timedelta(microseconds=1_500_042)
