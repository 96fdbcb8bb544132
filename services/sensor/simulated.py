"""Simulated sensors running the real sensor program (for ``shotline run --demo``).

For one simulated situation, every sensor that hears something gets its audio rendered
(:mod:`services.sensor.render`) and played in real time, block by block, into a
:class:`SensorService` with that sensor's token: the detector finds the onsets, the features
are measured, detections (and clips) go to ingest exactly as from a roof.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np

from services.sensor.queue import DetectionQueue
from services.sensor.render import HeardPulse, render
from services.sensor.service import AudioStream, SensorService
from services.sensor.settings import SensorSettings
from services.sensor.uplink import Uplink
from shared.schemas import DetectionRecord

SAMPLE_RATE = 12_000
LEAD_IN_S = 1.0  # audio before the situation's first sound (the detector's warm-up)


@dataclass(frozen=True)
class Heard:
    sensors: int
    onsets: int
    accepted: int
    clips: int


async def _paced(audio: np.ndarray, start: datetime, block: int) -> AsyncIterator[np.ndarray]:
    """The audio in blocks, each released once the wall clock has passed its end."""
    for first in range(0, audio.size, block):
        chunk = audio[first : first + block]
        due = start + timedelta(seconds=(first + chunk.size) / SAMPLE_RATE)
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)
        yield chunk


def stream_start_for(situation_start: datetime) -> datetime:
    return situation_start - timedelta(seconds=LEAD_IN_S)


async def hear(
    detections: list[DetectionRecord],
    *,
    stream_start: datetime,
    tokens: dict[str, str],
    ingest_url: str,
    seed: int,
    clips: bool = True,
) -> Heard:
    """Render what each sensor heard, run the sensor program on it in real time."""
    by_sensor: dict[str, list[DetectionRecord]] = defaultdict(list)
    for record in detections:
        by_sensor[record.sensor_id].append(record)
    settings = SensorSettings(flush_interval_s=0.05, drain_timeout_s=5.0, clips=clips,
                              retry_max_s=1.0)
    rng = np.random.default_rng(seed)
    services: list[SensorService] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for sensor_id, heard in sorted(by_sensor.items()):
            pulses = [
                HeardPulse((r.arrival_time - stream_start).total_seconds(),
                           r.features.peak_db if r.features.peak_db is not None else 80.0)
                for r in heard
            ]
            floors = [r.features.peak_db - r.features.snr_db for r in heard
                      if r.features.peak_db is not None and r.features.snr_db is not None]
            noise_db = float(np.median(floors)) if floors else 62.0
            seconds = max(p.at_s for p in pulses) + settings.clip_post_s + 0.5
            audio = render(pulses, seconds, rng, sample_rate=SAMPLE_RATE, noise_db=noise_db,
                           full_scale_db_spl=settings.full_scale_db_spl)
            block = int(SAMPLE_RATE * settings.block_ms / 1000)
            service = SensorService(
                settings, sensor_id=sensor_id,
                uplink=Uplink(ingest_url, tokens[sensor_id], client),
                stream=AudioStream(stream_start, SAMPLE_RATE, _paced(audio, stream_start, block)),
                queue=DetectionQueue(":memory:"),
            )
            services.append(service)
        for service in services:
            await service.start()
        results = await asyncio.gather(*(s.wait() for s in services), return_exceptions=True)
        for service in services:
            service.abort()
            service.queue.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return Heard(
        len(services),
        sum(s.counts.onsets for s in services),
        sum(s.counts.accepted for s in services),
        sum(s.counts.clips_sent for s in services),
    )
