"""Per-sensor health from solve residuals (pure).

Every located round leaves, for each sensor whose closest pulse lies near the fit, its signed
residual (observed minus predicted arrival) and whether it was rejected as inconsistent. A
sensor with a drifting clock shows up as a median residual persistently away from zero, or as
a sensor that is mostly rejected. The service turns :func:`is_drifting` into a metric + log.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from services.locator.config import LocatorConfig


@dataclass(frozen=True)
class SensorHealth:
    """Running summary over a sensor's last ``config.health_window`` solves."""

    sensor_id: str
    samples: int
    median_residual_s: float
    rejected_share: float


def is_drifting(health: SensorHealth, config: LocatorConfig) -> bool:
    """True if the sensor's arrivals are consistently off (e.g. its clock drifts).

    Needs at least ``health_min_samples`` solves; then flags a median signed residual beyond
    ``health_max_median_residual_s`` or a rejected share above ``health_max_rejected_share``.
    """
    if health.samples < config.health_min_samples:
        return False
    return (
        abs(health.median_residual_s) > config.health_max_median_residual_s
        or health.rejected_share > config.health_max_rejected_share
    )


class HealthTracker:
    """Bounded memory of each sensor's recent residuals (O(window) per sensor)."""

    def __init__(self, config: LocatorConfig) -> None:
        self._config = config
        self._samples: dict[str, deque[tuple[float, bool]]] = {}

    def record(self, sensor_id: str, residual_s: float, rejected: bool) -> None:
        window = self._samples.get(sensor_id)
        if window is None:
            window = self._samples[sensor_id] = deque(maxlen=self._config.health_window)
        window.append((residual_s, rejected))

    def summary(self) -> dict[str, SensorHealth]:
        out: dict[str, SensorHealth] = {}
        for sensor_id, window in sorted(self._samples.items()):
            out[sensor_id] = SensorHealth(
                sensor_id=sensor_id,
                samples=len(window),
                median_residual_s=statistics.median(r for r, _ in window),
                rejected_share=sum(1 for _, rej in window if rej) / len(window),
            )
        return out
