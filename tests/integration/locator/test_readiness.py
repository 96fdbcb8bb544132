"""The locator's ``/readyz`` (beside ``/metrics``) notices a frozen broker: it asks for
metadata under a deadline, where a TCP connect would still succeed."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx

from services.locator.scoring import ScoringModel
from services.locator.service import LocatorService
from shared.embedded import EmbeddedKafka
from shared.kafka import ensure_topics
from tests.conftest import Topics
from tests.integration.locator.conftest import locator_settings


async def test_readyz_answers_503_while_the_broker_is_frozen(topics: Topics) -> None:
    broker = EmbeddedKafka().start()
    service = None
    try:
        await ensure_topics(broker.bootstrap_servers, {topics.detections: 3, topics.incidents: 3})
        service = LocatorService(
            locator_settings(topics, metrics_port=0),
            bootstrap_servers=broker.bootstrap_servers,
            scorer=ScoringModel.load(),
        )
        await service.start()
        url = f"http://127.0.0.1:{service.metrics_port}"
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 200 and ready.json() == {"kafka": "ok"}
            assert "shotline_" in (await client.get(f"{url}/metrics")).text
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                frozen = await client.get(f"{url}/readyz")
                assert frozen.status_code == 503 and frozen.json() == {"kafka": "unreachable"}
                assert time.monotonic() - started < 3
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            await asyncio.sleep(0.2)
            assert (await client.get(f"{url}/readyz")).status_code == 200
    finally:
        if service is not None:
            await service.stop(5)
        broker.stop()
