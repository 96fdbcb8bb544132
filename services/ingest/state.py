"""What ingest's handlers share for the life of the process (built in the lifespan)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from services.ingest import metrics
from services.ingest.settings import IngestSettings
from services.ingest.validation import RecentDetections, TokenBucket
from shared.clock import Clock
from shared.kafka import KafkaError


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

    async def publish(self, zone: str, values: list[bytes]) -> None:
        """Write encoded detection records keyed by ``zone``; return once Kafka acked all.

        Raises KafkaError (or is cancelled by the caller's timeout) if any is not acked.
        """
        topic, key = self.settings.detections_topic, zone.encode()
        handed = time.perf_counter()
        futures = [await self.producer.send(topic, value, key=key) for value in values]
        await asyncio.gather(*futures)
        metrics.ACK_LATENCY.observe(time.perf_counter() - handed)
