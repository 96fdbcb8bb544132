"""The project's consumer (``build_consumer``) on the real broker."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from shared.kafka import build_consumer, build_producer, ensure_topics
from shared.settings import CommonSettings


async def test_a_record_produced_while_the_consumer_waits_is_handed_over_without_waiting_out_the_fetch(  # noqa: E501
    kafka_bootstrap: str,
) -> None:
    # A fetch parked at the broker with nothing new is answered no later than
    # fetch_max_wait_ms; the embedded broker does not answer earlier when a record arrives.
    # With aiokafka's default (500 ms) each of these records waited ~200 ms, at 100 ms ~30 ms:
    # that wait is paid on every hop of a shot's way to the CAD (locator, then dispatch).
    topic = f"fetch-wait-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 1})
    consumer = build_consumer(
        kafka_bootstrap, group_id=topic, client_id="test", session_timeout_ms=2000,
        fetch_max_wait_ms=CommonSettings().kafka_fetch_max_wait_ms,
    )
    consumer.subscribe([topic])
    producer = build_producer(kafka_bootstrap, client_id="test")
    await consumer.start()
    await producer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        waits: list[float] = []
        for _ in range(9):
            await asyncio.sleep(0.05)  # the consumer's fetch is parked at the broker
            sent = time.monotonic()
            await producer.send_and_wait(topic, b"detection")
            while not await consumer.getmany(timeout_ms=5000):
                pass
            waits.append(time.monotonic() - sent)
    finally:
        await producer.stop()
        await consumer.stop()
    assert CommonSettings().kafka_fetch_max_wait_ms <= 100
    assert statistics.median(waits) < 0.1, waits
