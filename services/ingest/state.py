"""What ingest's handlers share for the life of the process (built in the lifespan)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import asyncpg
from aiokafka import AIOKafkaProducer

from services.ingest import metrics
from services.ingest.auth import VerifiedTokens
from services.ingest.registry import Sensor
from services.ingest.settings import IngestSettings
from services.ingest.validation import RecentDetections, TokenBucket
from shared.clock import Clock
from shared.kafka import KafkaError

Key = tuple[str, str]
#: Fate of one detection after :meth:`IngestState.publish`: ``acked`` by Kafka, ``unknown``
#: (handed to the producer, no answer yet or a failed send that may have been written),
#: ``unavailable`` (never handed over: not stored).
Fate = Literal["acked", "unknown", "unavailable"]


@dataclass(frozen=True)
class ToPublish:
    key: Key
    digest: int
    value: bytes


@dataclass
class InFlight:
    """A detection handed to the producer whose acknowledgement has not come yet."""

    digest: int
    ack: asyncio.Future[object]


def _acked(ack: asyncio.Future[object]) -> bool:
    return ack.done() and not ack.cancelled() and ack.exception() is None


@dataclass
class IngestState:
    settings: IngestSettings
    bootstrap_servers: str
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    clock: Clock
    recent: RecentDetections
    rate_limit: TokenBucket
    tokens: VerifiedTokens[Sensor] = field(
        default_factory=lambda: VerifiedTokens(max_age_s=30.0, capacity=100_000)
    )
    last_seen: dict[str, datetime] = field(default_factory=dict)
    #: Handed to the producer, not yet acknowledged (a resend waits on the same send).
    in_flight: dict[Key, InFlight] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("shotline.ingest"))
    kafka_errors: tuple[type[BaseException], ...] = (KafkaError,)

    def _track(self, item: ToPublish, ack: asyncio.Future[object]) -> None:
        """Keep ``item`` in :attr:`in_flight` until its send settles. An acknowledged one is
        then remembered for ``duplicate`` answers (also when the request that waited for it
        has already answered ``unknown``); a failed one is forgotten (a resend is accepted)."""
        self.in_flight[item.key] = InFlight(item.digest, ack)
        started = time.perf_counter()

        def settled(done: asyncio.Future[object]) -> None:
            current = self.in_flight.get(item.key)
            if current is not None and current.ack is done:
                del self.in_flight[item.key]
            if _acked(done):
                metrics.ACK_LATENCY.observe(time.perf_counter() - started)
                self.recent.remember(item.key, self.clock(), item.digest)

        ack.add_done_callback(settled)

    async def publish(
        self,
        zone: str,
        items: Sequence[ToPublish],
        waits: Sequence[InFlight] = (),
        *,
        timeout_s: float,
    ) -> tuple[dict[Key, Fate], list[Fate]]:
        """Write encoded detection records keyed by ``zone`` and wait up to ``timeout_s`` for
        Kafka to acknowledge them (and the earlier sends in ``waits``).

        Never withdraws a send: a timeout ends the wait, not the send, so an item not
        acknowledged in time is ``unknown`` and stays in :attr:`in_flight` until it settles.
        An item not handed to the producer by the deadline (its buffer full, no metadata)
        is ``unavailable``: not stored. Returns the fate of each item by key and of each
        of ``waits`` in order.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        topic, key = self.settings.detections_topic, zone.encode()
        fates: dict[Key, Fate] = {item.key: "unavailable" for item in items}
        acks: dict[Key, asyncio.Future[object]] = {}
        try:
            async with asyncio.timeout_at(deadline):
                for item in items:
                    # A send cancelled here was not appended to a batch: nothing to withdraw.
                    ack = await self.producer.send(topic, item.value, key=key)
                    acks[item.key] = ack
                    self._track(item, ack)
        except (TimeoutError, *self.kafka_errors) as exc:
            self.log.warning("kafka did not take a detection", extra={"error": repr(exc)})
        pending = [*acks.values(), *(w.ack for w in waits)]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()))
        for item_key, ack in acks.items():
            fates[item_key] = "acked" if _acked(ack) else "unknown"
        return fates, ["acked" if _acked(w.ack) else "unknown" for w in waits]
