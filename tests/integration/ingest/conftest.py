"""Fixtures for ingest: a running ingest HTTP service on a free port, and registered sensors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.ingest.app import IngestService
from services.ingest.registry import add_sensor
from services.ingest.settings import IngestSettings
from shared.schemas import DetectionRecord, Position
from tests.conftest import Topics

PITTSBURGH = Position(lat=40.4406, lon=-79.9959, alt_m=20.0)


@dataclass
class FrozenClock:
    """A clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class RegisteredSensor:
    sensor_id: str
    zone: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def ingest_settings(topics: Topics, **overrides: object) -> IngestSettings:
    values: dict[str, object] = {
        "port": 0,
        "detections_topic": topics.detections,
        "topic_partitions": topics.partitions,
        "last_seen_flush_s": 0.2,
    }
    values.update(overrides)
    return IngestSettings.model_validate(values)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def register(db: asyncpg.Connection) -> Callable[..., object]:
    async def _register(sensor_id: str, zone: str = "zone-a") -> RegisteredSensor:
        _, token = await add_sensor(db, sensor_id, zone, PITTSBURGH)
        return RegisteredSensor(sensor_id, zone, token)

    return _register


@pytest.fixture
async def start_ingest(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> AsyncIterator[Callable[..., object]]:
    """``await start_ingest(clock=…, **settings)`` -> a started IngestService (stopped after)."""
    started: list[IngestService] = []

    async def _start(
        *,
        clock: Callable[[], datetime] | None = None,
        bootstrap: str | None = None,
        **overrides: object,
    ) -> IngestService:
        kwargs = {"clock": clock} if clock is not None else {}
        service = IngestService(
            ingest_settings(topics, **overrides),
            bootstrap_servers=bootstrap or kafka_bootstrap,
            database_url=database_url,
            **kwargs,
        )
        await service.start()
        started.append(service)
        return service

    yield _start
    for service in started:
        await service.stop(5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as http:
        yield http


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 10.0
) -> list[tuple[bytes | None, DetectionRecord]]:
    """Everything on ``topic`` (no group), waiting until ``expected`` records or the timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[tuple[bytes | None, DetectionRecord]] = []
    try:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(out) < expected:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                out.extend((m.key, DetectionRecord.model_validate_json(m.value)) for m in messages)
        if expected == 0:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                out.extend((m.key, DetectionRecord.model_validate_json(m.value)) for m in messages)
    finally:
        await consumer.stop()
    return out
