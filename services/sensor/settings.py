"""Sensor settings: environment variables prefixed ``SHOTLINE_SENSOR_``.

The sensor's identity, token and ingest URL come from the command line (``shotline sensor
--sensor-id ID --token-file F --ingest URL``); everything here has a working default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class SensorSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="SHOTLINE_SENSOR_", extra="ignore", frozen=True)

    queue_path: Path = Field(
        default=Path(".shotline/sensor-queue.sqlite3"),
        description="On-disk queue of detections not yet acknowledged (survives restarts)",
    )
    queue_capacity: int = Field(
        default=10_000, ge=10, le=1_000_000, description="Most detections queued; oldest dropped"
    )
    batch_max: int = Field(default=200, ge=1, le=1000, description="Most detections per post")
    flush_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="How often queued detections are posted"
    )
    retry_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait between retries during an outage"
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="After a file replay, how long to keep posting what is queued",
    )
    request_timeout_s: float = Field(default=10.0, gt=0, le=120, description="HTTP timeout")
    full_scale_db_spl: float = Field(
        default=93.5, ge=60, le=200,
        description="Calibration: the SPL of a full-scale sample (peak_db); 93.5 = the kit's "
        "sensors (the vendor's saturation level)",
    )
    ring_s: float = Field(
        default=3.0, ge=1, le=10,
        description="Seconds of audio kept in memory (features and clips); never more",
    )
    clips: bool = Field(default=True, description="Upload a ≤ 2 s clip of each detection")
    clip_pre_s: float = Field(default=1.0, ge=0.05, le=1.0, description="Clip before the onset")
    clip_post_s: float = Field(default=1.0, ge=0.05, le=1.0, description="Clip after the onset")
    block_ms: float = Field(default=100.0, ge=5, le=1000, description="Audio block length")
