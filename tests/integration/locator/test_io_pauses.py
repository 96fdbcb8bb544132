"""The consumer loop's I/O pauses between chunks of engine work (``_let_io_run``), on the real
broker: an incident sent before a chunk is on the wire when the chunk starts, and its ack is
taken at the pause after it, not one or two chunks later."""

from __future__ import annotations

import time

from services.locator.service import _let_io_run
from shared.kafka import build_producer
from tests.conftest import Topics


async def test_a_send_is_on_the_wire_after_one_pause_and_acknowledged_at_the_next(
    kafka_bootstrap: str, topics: Topics
) -> None:
    producer = build_producer(kafka_bootstrap, client_id="test-io-pauses", linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(topics.incidents, b"warm-up", key=b"k")  # connected
        for attempt in range(5):
            acked: list[int] = []
            future = await producer.send(topics.incidents, b"incident", key=b"k")
            future.add_done_callback(lambda _, n=attempt, seen=acked: seen.append(n))  # _on_ack
            await _let_io_run()  # the pause after handing incidents to the producer
            time.sleep(0.5)  # noqa: ASYNC251 - a chunk of engine work, blocking like it
            await _let_io_run()  # the pause after the chunk (the broker answered meanwhile)
            assert acked == [attempt], "the ack waited for another chunk of work"
    finally:
        await producer.stop()
