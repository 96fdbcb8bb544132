"""Locator settings: environment variables prefixed ``SHOTLINE_LOCATOR_`` (plus the common ones).

Two kinds of fields:

* the service's own (consumer group, metrics listener, scoring model, dead-letter budget,
  back-pressure thresholds, timeouts);
* tuning of the pure engine, mapped one to one onto :class:`LocatorConfig` by
  :meth:`LocatorSettings.locator_config` (same names; defaults are LocatorConfig's own, so
  there is one source of truth for them).

Invalid combinations fail at start-up (validators), never at the first detection.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.locator.config import LocatorConfig
from shared.settings import CommonSettings

_D = LocatorConfig()  # defaults of the engine's tuning


class LocatorSettings(CommonSettings):
    """Every ``SHOTLINE_LOCATOR_*`` variable (e.g. ``SHOTLINE_LOCATOR_GROUP_ID``)."""

    model_config = SettingsConfigDict(
        env_prefix="SHOTLINE_LOCATOR_", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- service -------------------------------------------------------------------------
    group_id: str = Field(
        default="shotline-locator",
        min_length=1,
        description="Kafka consumer group; instances in one group split the zones' partitions",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics")
    metrics_port: int = Field(
        default=9102, ge=-1, le=65535, description="Port of /metrics (0 = any free, -1 = off)"
    )
    scoring_model_path: Path | None = Field(
        default=None,
        description="Fitted scoring model (JSON from `shotline locator fit`); unset = built-in",
    )
    dlq_limit: int = Field(
        default=100, ge=1, description="Most poison messages sent to <topic>.dlq per window"
    )
    dlq_window_s: float = Field(default=60.0, gt=0, description="Dead-letter budget window, s")
    max_retained: int = Field(
        default=50_000,
        ge=10,
        description="Pause the partitions when this many detections are retained undecided",
    )
    resume_retained: int = Field(
        default=25_000, ge=0, description="Resume the partitions once retained drops to this"
    )
    max_poll_records: int = Field(
        default=500, ge=1, le=100_000, description="Most records taken per fetch"
    )
    fetch_wait_ms: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Longest wait for new records when no window deadline is sooner",
    )
    # Why 40 ms, not 10: each fetch costs the broker a request and this loop a step, and a
    # detection waiting a little longer costs no alert anything (a window waits
    # ingest_lateness_s, 1 s, past its last pulse's physics anyway). On the embedded broker a
    # fetch also stalls every produce request while it scans its topic, so fewer fetches
    # shorten the incidents' acks (measured in docs/locator-performance.md).
    fetch_interval_ms: int = Field(
        default=40,
        ge=0,
        le=1_000,
        description="Least time between two fetches; due windows are still closed meanwhile",
    )
    max_unacked: int = Field(
        default=1_000,
        ge=1,
        description="Most incidents awaiting Kafka's ack before the loop waits for them",
    )
    produce_timeout_s: float = Field(
        default=15.0, gt=0, le=300, description="Give up publishing incidents after this long"
    )
    commit_interval_s: float = Field(
        default=0.2, ge=0, le=60, description="Least time between two offset commits, s"
    )
    health_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often sensor health is re-evaluated per zone (at most; only zones that "
        "located a round since). A drifting clock shows over many shots, not seconds",
    )

    # --- engine tuning (LocatorConfig) ---------------------------------------------------
    default_temperature_c: float = Field(default=_D.default_temperature_c, ge=-60, le=70)
    max_range_m: float = Field(default=_D.max_range_m, gt=0)
    association_tolerance_s: float = Field(default=_D.association_tolerance_s, gt=0)
    window_margin_s: float = Field(default=_D.window_margin_s, ge=0)
    ingest_lateness_s: float = Field(default=_D.ingest_lateness_s, ge=0)
    min_sensors: int = Field(default=_D.min_sensors, ge=3)
    echo_level_margin_db: float = Field(default=_D.echo_level_margin_db, ge=0)
    update_window_s: float = Field(default=_D.update_window_s, ge=0)
    update_distance_m: float = Field(default=_D.update_distance_m, ge=0)
    health_min_samples: int = Field(default=_D.health_min_samples, ge=1)
    health_max_median_residual_s: float = Field(default=_D.health_max_median_residual_s, gt=0)
    health_max_rejected_share: float = Field(default=_D.health_max_rejected_share, ge=0, le=1)
    max_pending: int = Field(default=_D.max_pending, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> LocatorSettings:
        if self.resume_retained >= self.max_retained:
            raise ValueError("resume_retained must be below max_retained (hysteresis)")
        if self.scoring_model_path is not None and not self.scoring_model_path.is_file():
            raise ValueError(f"scoring_model_path {self.scoring_model_path} is not a file")
        self.locator_config()  # LocatorConfig's own checks, at start-up
        return self

    def locator_config(self) -> LocatorConfig:
        """The engine's tuning: every LocatorConfig field that has a setting of the same name.

        Raises ValueError when LocatorConfig rejects the combination.
        """
        names = {f.name for f in fields(LocatorConfig)}
        values = {name: getattr(self, name) for name in names if name in type(self).model_fields}
        return LocatorConfig(**values)
