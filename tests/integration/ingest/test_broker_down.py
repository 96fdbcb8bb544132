"""When Kafka does not acknowledge, a sensor is told the truth per item, and the dedup knows.

A timeout ends ingest's wait, not the producer's send: a detection handed over before the
broker stalled reaches the topic when the broker resumes. So it is answered ``unknown`` (not
"nothing accepted"), a resend while it is still in flight waits on the same send instead of
writing a second copy, and a resend after it landed is a ``duplicate``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime

from shared.embedded import EmbeddedKafka
from shared.kafka import ensure_topics
from tests.integration.ingest.conftest import read_topic
from tests.integration.ingest.test_detections import detection
from tests.support.openapi import check_response


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _statuses(answer) -> list[str]:
    return [r["status"] for r in answer.json()["results"]]


async def test_a_paused_broker_gets_unknown_per_item_and_what_landed_is_a_duplicate_after(
    start_ingest, register, client, topics
):
    broker = EmbeddedKafka().start()
    try:
        await ensure_topics(broker.bootstrap_servers, {topics.detections: 3})
        sensor = await register("s-1")
        ingest = await start_ingest(
            bootstrap=broker.bootstrap_servers,
            produce_timeout_s=1.0,
            retry_after_s=3,
            readiness_timeout_s=0.5,
            max_in_flight=2,
        )
        url = f"{ingest.url}/v1/detections"
        now = _now()
        ok = await client.post(
            url,
            json={"detections": [detection("s-1", 1, arrival_time=now)]},
            headers=sensor.headers,
        )
        assert ok.status_code == 202

        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)  # the broker freezes: TCP still connects
        try:
            batch = [detection("s-1", n, arrival_time=now) for n in (2, 3)]
            stalled = await client.post(url, json={"detections": batch}, headers=sensor.headers)
            assert stalled.status_code == 503
            assert stalled.headers["retry-after"] == "3"
            assert stalled.json()["accepted"] == 0
            assert _statuses(stalled) == ["unknown", "unknown"]  # not "nothing was accepted"
            check_response(ingest.app.openapi(), "/v1/detections", "post", 503, stalled.json())

            started = time.monotonic()
            ready = await client.get(f"{ingest.url}/readyz")
            assert ready.status_code == 503 and ready.json()["kafka"] == "unreachable"
            assert time.monotonic() - started < 2.0  # a short deadline, not the TCP connect

            # A resend while the first send is still in flight waits on it (no second copy);
            # the same id with other content is a conflict.
            again = await client.post(
                url,
                json={"detections": [batch[0], detection("s-1", 3, arrival_time=now, snr_db=9.0)]},
                headers=sensor.headers,
            )
            assert again.status_code == 503
            assert _statuses(again) == ["unknown", "conflict"]

            # Two sends are in flight, the most allowed: a new detection is refused at once
            # (back-pressure, not an unbounded buffer), and it is known not to be stored.
            refused = await client.post(
                url,
                json={"detections": [detection("s-1", 4, arrival_time=now)]},
                headers=sensor.headers,
            )
            assert refused.status_code == 503
            assert _statuses(refused) == ["unavailable"]
            assert "nothing from this request was accepted" in refused.json()["detail"]
        finally:
            os.kill(broker.pid, signal.SIGCONT)

        # The sends were never withdrawn: both land once the broker resumes, once each.
        records = await read_topic(broker.bootstrap_servers, topics.detections, 3, timeout_s=15)
        assert sorted(r.detection_id for _, r in records) == [
            "s-1-000001",
            "s-1-000002",
            "s-1-000003",
        ]
        resend = None
        for _ in range(50):  # the producer's retry lands them; the dedup then knows
            resend = await client.post(url, json={"detections": batch}, headers=sensor.headers)
            if _statuses(resend) == ["duplicate", "duplicate"]:
                break
            await asyncio.sleep(0.1)
        assert resend is not None and resend.status_code == 202
        assert _statuses(resend) == ["duplicate", "duplicate"]
        assert (
            len(await read_topic(broker.bootstrap_servers, topics.detections, 4, timeout_s=2)) == 3
        )
        assert (await client.get(f"{ingest.url}/readyz")).status_code == 200
    finally:
        broker.stop()


async def test_a_broker_that_is_gone_gets_503_with_retry_after_and_no_claim_of_acceptance(
    start_ingest, register, client, topics
):
    broker = EmbeddedKafka().start()
    try:
        await ensure_topics(broker.bootstrap_servers, {topics.detections: 3})
        sensor = await register("s-1")
        ingest = await start_ingest(
            bootstrap=broker.bootstrap_servers, produce_timeout_s=1.0, retry_after_s=3
        )
        url = f"{ingest.url}/v1/detections"
        now = _now()
        ok = await client.post(
            url,
            json={"detections": [detection("s-1", 1, arrival_time=now)]},
            headers=sensor.headers,
        )
        assert ok.status_code == 202

        broker.stop()
        down = await client.post(
            url,
            json={"detections": [detection("s-1", n, arrival_time=now) for n in (2, 3)]},
            headers=sensor.headers,
        )
        assert down.status_code == 503
        assert down.headers["retry-after"] == "3"
        assert down.json()["accepted"] == 0
        assert set(_statuses(down)) <= {"unknown", "unavailable"}
        ready = await client.get(f"{ingest.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["kafka"] == "unreachable"

    finally:
        broker.stop()
