"""Sensor health: running residual summary and the drifting-clock flag."""

from __future__ import annotations

import pytest

from services.locator.config import LocatorConfig
from services.locator.health import HealthTracker, SensorHealth, is_drifting

CFG = LocatorConfig(
    health_min_samples=5, health_max_median_residual_s=0.010, health_max_rejected_share=0.5
)


@pytest.mark.parametrize(
    ("samples", "median_s", "rejected", "flag"),
    [
        (50, 0.001, 0.0, False),  # healthy
        (50, 0.015, 0.0, True),  # consistently 15 ms late: drifting clock
        (50, -0.012, 0.1, True),  # consistently early
        (50, 0.002, 0.6, True),  # mostly rejected as inconsistent
        (4, 0.300, 1.0, False),  # too few solves to judge
        (5, 0.010, 0.5, False),  # exactly at both limits: not flagged
    ],
)
def test_is_drifting(samples: int, median_s: float, rejected: float, flag: bool) -> None:
    assert is_drifting(SensorHealth("s1", samples, median_s, rejected), CFG) is flag


def test_tracker_keeps_the_last_window_of_solves() -> None:
    tracker = HealthTracker(LocatorConfig(health_window=3))
    for residual, rejected in [(0.5, True), (0.001, False), (0.003, False), (0.002, False)]:
        tracker.record("s1", residual, rejected)
    h = tracker.summary()["s1"]
    assert (h.samples, h.median_residual_s, h.rejected_share) == (3, 0.002, 0.0)
