"""Ingest settings: environment variables prefixed ``SHOTLINE_INGEST_`` (plus the common ones)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="SHOTLINE_INGEST_", extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = any free port)")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body")
    max_batch: int = Field(default=1000, ge=1, le=10_000, description="Most detections a request")
    clock_tolerance_s: float = Field(
        default=2.0, ge=0, le=300, description="How far in the future an arrival_time may be"
    )
    max_age_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Oldest arrival_time accepted; older pulses cannot be located usefully",
    )
    rate_per_sensor_per_s: float = Field(
        default=50.0, gt=0, description="Sustained requests per second allowed per sensor"
    )
    rate_burst: int = Field(default=100, ge=1, description="Requests a sensor may burst")
    produce_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Wait this long for Kafka's ack, then answer 503"
    )
    retry_after_s: int = Field(default=2, ge=1, le=600, description="Retry-After on a 503")
    max_in_flight: int = Field(
        default=100_000,
        ge=1,
        description="Detections handed to Kafka and not yet acknowledged; beyond this a "
        "request is answered 503 without handing anything over",
    )
    db_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Wait this long for a token lookup in PostgreSQL"
    )
    token_cache_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="While PostgreSQL does not answer, a token it confirmed within this many "
        "seconds is still accepted: the longest a revocation just before an outage is ignored "
        "(0: answer 503 at once)",
    )
    token_cache_size: int = Field(
        default=100_000, ge=1, description="Tokens remembered for a database outage"
    )
    readiness_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="/readyz: how long Kafka (a metadata request) and PostgreSQL may take",
    )
    last_seen_flush_s: float = Field(
        default=5.0, gt=0, description="How often sensors' last-seen times are written"
    )
    dedup_capacity: int = Field(
        default=1_000_000, ge=1000, description="Detection ids remembered for duplicate replies"
    )
    db_pool_size: int = Field(
        default=8, ge=1, le=100, description="PostgreSQL connections (token lookups)"
    )
    max_clip_bytes: int = Field(
        default=262_144, ge=1024, le=16_777_216,
        description="Largest detection clip (WAV) accepted on /v1/detections/{id}/audio",
    )
    max_clip_s: float = Field(
        default=2.05, gt=0, le=2.05, description="Longest clip: 1 s either side of the onset"
    )
    clip_max_voice_share: float = Field(
        default=0.3, ge=0, le=1,
        description="Refuse a clip whose share of loud voice-band (speech-like) frames is more",
    )
    clip_retention_s: float = Field(
        default=604_800.0, gt=0,
        description="Clips are deleted this long after arrival unless an incident holds them",
    )
    clip_purge_interval_s: float = Field(
        default=3600.0, gt=0, description="How often expired clips are deleted"
    )
