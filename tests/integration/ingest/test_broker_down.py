"""When Kafka does not acknowledge, ingest answers 503 and reports nothing accepted."""

from __future__ import annotations

from shared.embedded import EmbeddedKafka
from shared.kafka import ensure_topics
from tests.integration.ingest.test_detections import detection


async def test_broker_unreachable_gives_503_with_retry_after_and_no_false_acceptance(
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
        from datetime import UTC, datetime

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ok = await client.post(
            url,
            json={"detections": [detection("s-1", 1, arrival_time=now)]},
            headers=sensor.headers,
        )
        assert ok.status_code == 202

        broker.stop()
        down = await client.post(
            url,
            json={
                "detections": [
                    detection("s-1", 2, arrival_time=now),
                    detection("s-1", 3, arrival_time=now),
                ]
            },
            headers=sensor.headers,
        )
        assert down.status_code == 503
        assert down.headers["retry-after"] == "3"
        assert "accepted" not in down.json()  # no per-item "accepted" claims
        ready = await client.get(f"{ingest.url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["kafka"] == "unreachable"

        # What was refused is not remembered as seen: the resend is not called a duplicate.
        # (The in-memory broker lost everything when it stopped, so start a new one on the
        # same port to receive the resend.)
        revived = EmbeddedKafka(port=broker.port).start()
        try:
            await ensure_topics(revived.bootstrap_servers, {topics.detections: 3})
            again = None
            for _ in range(40):
                again = await client.post(
                    url,
                    json={"detections": [detection("s-1", 2, arrival_time=now)]},
                    headers=sensor.headers,
                )
                if again.status_code == 202:
                    break
            assert again is not None and again.status_code == 202
            assert again.json()["results"][0]["status"] == "accepted"
        finally:
            revived.stop()
    finally:
        broker.stop()
