"""The ``shotline locator`` process itself, killed with SIGKILL mid-stream and restarted.

The in-process crash test (``test_group.py``) aborts the service's tasks; this one kills the
real process the way an OOM killer or a lost node does, so nothing in ``main`` (signal
handling, shutdown hooks, buffered clients) can help it, and checks the successor rebuilds
and re-publishes exactly. It also stops the successor with SIGTERM and expects a clean exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from dataclasses import replace

from aiokafka import AIOKafkaConsumer

from services.locator.simulate import TruthEvent
from tests.conftest import Topics
from tests.integration.locator.conftest import (
    Published,
    Shots,
    eventually,
    gunfire,
    located,
    past,
    produce,
    simulate_zone,
)
from tests.integration.locator.test_group import (
    ZONES,
    assert_consistent,
    assert_one_incident_per_shot,
)
from tests.support.processes import kill_leftovers, start_service, stop_cleanly


async def _start_process(bootstrap: str, topics: Topics, group: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SHOTLINE_DETECTIONS_TOPIC": topics.detections,
        "SHOTLINE_INCIDENTS_TOPIC": topics.incidents,
        "SHOTLINE_TOPIC_PARTITIONS": str(topics.partitions),
        "SHOTLINE_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "SHOTLINE_LOCATOR_GROUP_ID": group,
        "SHOTLINE_LOCATOR_METRICS_PORT": "-1",
        "SHOTLINE_LOG_LEVEL": "WARNING",
    }
    return await start_service("locator", env)


async def _wait_for_dead_letters(bootstrap: str, topic: str, count: int) -> None:
    """Until ``count`` records are on ``<topic>.dlq``: the locator has consumed every record
    before the poison markers that became them."""
    reader = AIOKafkaConsumer(
        topic + ".dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        seen = 0
        deadline = asyncio.get_running_loop().time() + 30
        while seen < count:
            assert asyncio.get_running_loop().time() < deadline, "the markers never came back"
            batch = await reader.getmany(timeout_ms=200)
            seen += sum(len(records) for records in batch.values())
    finally:
        await reader.stop()


def _zones() -> list[Shots]:
    """Per zone (one partition each): a burst 30 s ago, a shot 15 s ago and a shot now."""
    return [
        simulate_zone(zone, ["burst", "shot", "shot"], start=past(30), spacing_s=15,
                      seed=60 + p)
        for p, zone in enumerate(ZONES)
    ]


def _last(shots: Shots) -> TruthEvent:
    return max(shots.truth, key=lambda event: event.times[0])


async def test_a_killed_locator_process_loses_nothing_and_its_successor_republishes_exactly(
    kafka_bootstrap: str, topics: Topics, published: Published
) -> None:
    then = _zones()
    for p, shots in enumerate(then):
        old = [d for d in shots.detections if not d.detection_id.startswith("e2-")]
        await produce(kafka_bootstrap, topics.detections, old, partition=p)

    group = f"locator-process-{uuid.uuid4().hex[:8]}"
    first_process = await _start_process(kafka_bootstrap, topics, group)
    successor = None
    try:
        await eventually(
            lambda: len(published.records) >= 3, timeout_s=60, what="the first incidents"
        )
        # The same zones and shots drawn again, so that the last shot is fired now (however
        # long the start took): its window stays open for seconds of physics wait.
        now = _zones()
        zones = [
            replace(
                t, detections=[d for d in t.detections if not d.detection_id.startswith("e2-")]
                + [d for d in n.detections if d.detection_id.startswith("e2-")],
                truth=[e for e in t.truth if e is not _last(t)] + [_last(n)],
            )
            for t, n in zip(then, now, strict=True)
        ]
        for p, shots in enumerate(now):
            # A poison marker after the fresh shot: once it is dead-lettered, the shot's
            # detections were consumed (and, by a wrong commit policy, committed).
            fresh = [d for d in shots.detections if d.detection_id.startswith("e2-")]
            await produce(kafka_bootstrap, topics.detections, [*fresh, b"marker"], partition=p)
        await _wait_for_dead_letters(kafka_bootstrap, topics.detections, len(ZONES))
        await asyncio.sleep(0.6)  # a few commit intervals (0.2 s)
        for shots in now:  # (else this would not test an open window)
            assert not located(published, [_last(shots)], 10.0), "a window closed too soon"
        first_process.send_signal(signal.SIGKILL)
        assert await first_process.wait() == -signal.SIGKILL
        before_restart = len(published.records)

        successor = await _start_process(kafka_bootstrap, topics, group)
        events = [e for shots in zones for e in gunfire(shots.truth)]
        await eventually(lambda: located(published, events, 10.0), timeout_s=60, what="all shots")

        assert len(published.records) > before_restart
        assert_consistent(published)  # each (id, version) published with one content only
        assert_one_incident_per_shot(published, zones)

        await stop_cleanly(successor)
    finally:
        await kill_leftovers(first_process, successor)
