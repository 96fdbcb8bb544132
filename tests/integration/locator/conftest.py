"""Fixtures for the locator service: simulated shots on the real broker, a running locator,
and a reader of everything it publishes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.locator.scoring import ScoringModel
from services.locator.service import LocatorService
from services.locator.settings import LocatorSettings
from services.locator.simulate import CityArray, Scenario, TruthEvent, build_array, scenario
from shared.geo import haversine_m
from shared.kafka import build_producer, encode
from shared.schemas import DetectionRecord, IncidentRecord
from tests.conftest import Topics


def locator_settings(topics: Topics, **overrides: object) -> LocatorSettings:
    values: dict[str, object] = {
        "detections_topic": topics.detections,
        "incidents_topic": topics.incidents,
        "topic_partitions": topics.partitions,
        "kafka_session_timeout_ms": 2000,
        "group_id": f"locator-{uuid.uuid4().hex[:8]}",
        "metrics_port": -1,
        "fetch_wait_ms": 50,
    }
    values.update(overrides)
    return LocatorSettings.model_validate(values)


@pytest.fixture
async def start_locator(
    kafka_bootstrap: str, topics: Topics
) -> AsyncIterator[Callable[..., object]]:
    """``await start_locator(**settings)`` -> a started LocatorService (stopped after)."""
    started: list[LocatorService] = []
    scorer = ScoringModel.load()

    async def _start(**overrides: object) -> LocatorService:
        service = LocatorService(
            locator_settings(topics, **overrides), bootstrap_servers=kafka_bootstrap, scorer=scorer
        )
        await service.start()
        started.append(service)
        return service

    yield _start
    for service in started:
        await service.stop(5)


# ------------------------------------------------------------------ simulated traffic
@dataclass(frozen=True)
class Shots:
    """Simulated events of one zone, their detections (renamed unique) and the zone's array."""

    zone: str
    array: CityArray
    detections: list[DetectionRecord]
    truth: list[TruthEvent]


def simulate_zone(
    zone: str, kinds: Iterable[str], *, start: datetime, spacing_s: float = 20.0, seed: int = 0
) -> Shots:
    """One scenario per kind, ``spacing_s`` apart in event time, in one zone's array."""
    array = build_array(zone=zone, seed=seed)
    detections: list[DetectionRecord] = []
    truth: list[TruthEvent] = []
    for i, kind in enumerate(kinds):
        made: Scenario = scenario(
            kind,
            array,
            start=start + timedelta(seconds=i * spacing_s),
            rng=np.random.default_rng(seed * 1000 + i),
        )
        # Each scenario numbers its detections from 0: make ids unique within the zone.
        detections.extend(
            d.model_copy(update={"detection_id": f"e{i}-{d.detection_id}"})
            for d in made.detections
        )
        truth.extend(made.truth)
    return Shots(zone, array, detections, truth)


def past(seconds: float) -> datetime:
    """A start time this long ago (whole milliseconds, so times stay readable)."""
    return (datetime.now(UTC) - timedelta(seconds=seconds)).replace(microsecond=0)


async def produce(
    bootstrap: str, topic: str, records: Iterable[DetectionRecord | bytes], partition: int
) -> list[int]:
    """Write records (models or raw bytes) to one partition, keyed by zone; awaits the acks.

    Sent back to back so that they land in one batch; returns their offsets.
    """
    producer = build_producer(bootstrap, client_id="test-detections", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for record in records:
            if isinstance(record, DetectionRecord):
                value, key = encode(record), record.zone.encode()
            else:
                value, key = record, b"poison"
            futures.append(await producer.send(topic, value=value, key=key, partition=partition))
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


# ------------------------------------------------------------------ published incidents
@dataclass
class Published:
    """Everything on the incidents topic, read without a group from the beginning."""

    records: list[tuple[bytes | None, IncidentRecord]] = field(default_factory=list)

    @property
    def incidents(self) -> list[IncidentRecord]:
        return [r for _, r in self.records]

    def latest(self) -> dict[str, IncidentRecord]:
        out: dict[str, IncidentRecord] = {}
        for inc in self.incidents:
            if inc.incident_id not in out or inc.version > out[inc.incident_id].version:
                out[inc.incident_id] = inc
        return out


@pytest.fixture
async def published(kafka_bootstrap: str, topics: Topics) -> AsyncIterator[Published]:
    """A live view of the incidents topic (filled by a background reader)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    consumer.assign([TopicPartition(topics.incidents, p) for p in range(topics.partitions)])
    seen = Published()

    async def _read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                seen.records.extend(
                    (m.key, IncidentRecord.model_validate_json(m.value)) for m in messages
                )

    task = asyncio.create_task(_read())
    yield seen
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await consumer.stop()


async def eventually(
    condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def gunfire(truth: Iterable[TruthEvent]) -> list[TruthEvent]:
    return [t for t in truth if t.kind == "gunfire"]


def nearest(incidents: Iterable[IncidentRecord], event: TruthEvent) -> tuple[float, IncidentRecord]:
    """The incident closest to a truth event, and its distance (m)."""
    return min(
        ((haversine_m(i.location.lat, i.location.lon, event.lat, event.lon), i) for i in incidents),
        key=lambda pair: pair[0],
    )


def located(published: Published, events: Iterable[TruthEvent], within_m: float) -> bool:
    """Every event has an incident within ``within_m`` carrying all of its rounds."""
    latest = list(published.latest().values())
    if not latest:
        return False
    for event in events:
        dist, inc = nearest(latest, event)
        if dist > within_m or inc.rounds < len(event.times):
            return False
    return True
