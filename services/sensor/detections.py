"""From an onset in a stream to the detection a sensor posts (pure).

A detection's id is derived from the sensor and the onset instant (to the microsecond),
never from a counter: replaying the same recording, or resending after a restart, yields
the same ``detection_id``, which ingest answers ``duplicate`` instead of taking a second
pulse.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from shared.schemas import format_time


def onset_time(stream_start: datetime, sample: float, sample_rate: int) -> datetime:
    """The instant of sub-sample ``sample`` of a stream whose sample 0 was taken at
    ``stream_start`` (rounded to the microsecond, the wire's resolution)."""
    micros = round(sample * 1_000_000 / sample_rate)
    return stream_start.astimezone(UTC) + timedelta(microseconds=micros)


def detection_id(sensor_id: str, onset: datetime) -> str:
    """``on-`` + 20 hex digits of SHA-256 over the sensor id and the onset's wire time."""
    digest = hashlib.sha256(f"{sensor_id}|{format_time(onset)}".encode()).hexdigest()
    return f"on-{digest[:20]}"


def detection_body(
    sensor_id: str,
    onset: datetime,
    features: dict[str, float] | None,
    *,
    position: dict[str, float] | None = None,
    temperature_c: float | None = None,
) -> dict:
    """One item of ``POST /v1/detections`` (``shared.schemas.DetectionIn`` as JSON)."""
    body: dict = {
        "detection_id": detection_id(sensor_id, onset),
        "sensor_id": sensor_id,
        "arrival_time": format_time(onset),
    }
    if features:
        body.update(features)
    if position is not None:
        body["position"] = position
    if temperature_c is not None:
        body["temperature_c"] = temperature_c
    return body
