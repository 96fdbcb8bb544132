"""A constructed city for locator tests: sensors, shots and dirt with known answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.locator.config import LocatorConfig
from services.locator.evidence import Score, ShotEvidence
from shared.geo import LocalFrame, speed_of_sound
from shared.schemas import AcousticFeatures, DetectionRecord, Position

FRAME = LocalFrame(40.4406, -79.9959, 250.0)
TEMPERATURE_C = 20.0
C = speed_of_sound(TEMPERATURE_C)
T0 = datetime(2026, 11, 25, 1, 0, 0, tzinfo=UTC)
ZONE = "test-zone"

#: Twelve rooftop sensors over about 1.2 km x 1.2 km, heights 3-25 m (east, north, up).
SENSORS = np.array(
    [
        [-600, -600, 10], [0, -620, 4], [610, -590, 18], [-590, 0, 7], [5, 10, 25],
        [600, 20, 12], [-610, 600, 3], [0, 590, 15], [620, 610, 9], [-300, 300, 20],
        [300, -300, 6], [310, 320, 11],
    ],
    dtype=float,
)


def placeholder_scorer(evidence: ShotEvidence) -> Score:
    """Stands in for services.locator.scoring in these tests: more sensors, more likely."""
    return Score(probability=min(1.0, evidence.sensor_count / 10), classification="gunfire")


@dataclass
class Scene:
    """Builds detections (pulses) for constructed shots and dirt, in event time."""

    sensors: np.ndarray = field(default_factory=lambda: SENSORS.copy())
    detections: list[DetectionRecord] = field(default_factory=list)
    _n: int = 0

    def sensor_id(self, i: int) -> str:
        return f"s{i:02d}"

    def pulse(
        self, sensor: int, at: float, received_delay_s: float = 0.05, snr_db: float | None = None
    ) -> DetectionRecord:
        """A pulse heard by ``sensor`` at T0 + ``at`` seconds (``snr_db``: its loudness)."""
        self._n += 1
        lat, lon, alt = FRAME.to_geodetic(self.sensors[sensor])
        arrival = T0 + timedelta(microseconds=round(at * 1e6))
        det = DetectionRecord(
            detection_id=f"d{self._n:05d}",
            sensor_id=self.sensor_id(sensor),
            zone=ZONE,
            arrival_time=arrival,
            position=Position(lat=float(lat), lon=float(lon), alt_m=float(alt)),
            features=AcousticFeatures(snr_db=snr_db),
            temperature_c=TEMPERATURE_C,
            received_at=arrival + timedelta(seconds=received_delay_s),
        )
        self.detections.append(det)
        return det

    def arrival(self, source: np.ndarray, sensor: int, fired_at: float) -> float:
        return fired_at + float(np.linalg.norm(self.sensors[sensor] - source)) / C

    def shot(
        self, source: list[float] | np.ndarray, fired_at: float, skip: tuple[int, ...] = (),
        late: dict[int, float] | None = None, snr_db: float | None = None,
        sensors: tuple[int, ...] | None = None,
    ) -> list[DetectionRecord]:
        """Arrivals from ``source`` at every sensor (or ``sensors``) but ``skip``.

        ``late`` adds seconds per sensor; ``snr_db`` is every pulse's loudness.
        """
        src = np.asarray(source, float)
        late = late or {}
        chosen = range(len(self.sensors)) if sensors is None else sensors
        return [
            self.pulse(i, self.arrival(src, i, fired_at) + late.get(i, 0.0), snr_db=snr_db)
            for i in chosen
            if i not in skip
        ]

    def sorted(self) -> list[DetectionRecord]:
        return sorted(self.detections, key=lambda d: (d.arrival_time, d.sensor_id))


def to_local(lat: float, lon: float) -> np.ndarray:
    return FRAME.to_enu(lat, lon, 0.0)[:2]


@pytest.fixture
def scene() -> Scene:
    return Scene()


@pytest.fixture
def config() -> LocatorConfig:
    return LocatorConfig(default_temperature_c=TEMPERATURE_C)
