"""Oversight settings: ``SHOTLINE_OVERSIGHT_*`` (retention, public-location coarsening,
matching rules of the report). Read by ``shotline report``/``retention`` and by dispatch
(which runs retention on a timer)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class OversightSettings(CommonSettings):
    """Every ``SHOTLINE_OVERSIGHT_*`` variable."""

    model_config = SettingsConfigDict(
        env_prefix="SHOTLINE_OVERSIGHT_", extra="ignore", frozen=True, populate_by_name=True
    )

    retention_days: float = Field(
        default=365.0,
        gt=0,
        description="Detections and exact locations of incidents (and of 911 calls) older "
        "than this are deleted; counts, classes, times and a coarse cell are kept. A year, "
        "so that a contract year's located-within-25 m rate can still be computed",
    )
    retention_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="Dispatch runs retention this often (0 = never; `shotline retention run`)",
    )
    cell_m: float = Field(
        default=250.0,
        ge=10,
        le=10_000,
        description="Public locations (report map, CSVs, analysts) are grid cells this wide, m",
    )
    min_cell_count: int = Field(
        default=3, ge=1, description="Cells with fewer alerts than this are suppressed (k)"
    )
    match_distance_m: float = Field(
        default=400.0,
        gt=0,
        description="A 911 call (or a verified shooting) and an alert match within this, m",
    )
    match_window_s: float = Field(
        default=600.0, gt=0, description="... and a 911 call within this of the first round, s"
    )
    shooting_window_s: float = Field(
        default=60.0, gt=0, description="A verified shooting matches an alert within this, s"
    )
    located_within_m: float = Field(
        default=25.0,
        gt=0,
        description="Contract formula: a shooting is located when an alert lies this close",
    )
    latency_target_s: float = Field(
        default=60.0, gt=0, description="The shot-to-alert target the report measures against"
    )
