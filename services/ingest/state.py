"""What ingest's handlers share for the life of the process (built in the lifespan)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from services.ingest.settings import IngestSettings
from services.ingest.validation import RecentDetections, TokenBucket
from shared.clock import Clock
from shared.kafka import KafkaError, encode
from shared.schemas import DetectionRecord


@dataclass
class IngestState:
    settings: IngestSettings
    bootstrap_servers: str
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    clock: Clock
    recent: RecentDetections
    rate_limit: TokenBucket
    last_seen: dict[str, datetime] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("shotline.ingest"))
    kafka_errors: tuple[type[BaseException], ...] = (KafkaError,)

    async def publish(self, records: list[DetectionRecord]) -> None:
        """Write records keyed by zone and wait until Kafka acknowledged every one.

        Raises KafkaError (or is cancelled by the caller's timeout) if any is not acked.
        """
        futures = [
            await self.producer.send(self.settings.detections_topic, encode(r), key=r.zone.encode())
            for r in records
        ]
        await asyncio.gather(*futures)
