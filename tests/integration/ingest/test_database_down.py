"""With PostgreSQL stopped, ingest answers 503 with Retry-After (never a 500), except for
tokens it confirmed within ``token_cache_s``: those are served from memory, for that long."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from services.ingest.app import IngestService
from services.ingest.registry import add_sensor
from shared.db import migrate
from shared.embedded import EmbeddedPostgres
from tests.integration.ingest.conftest import PITTSBURGH, ingest_settings, read_topic
from tests.integration.ingest.test_detections import detection
from tests.support.openapi import check_response


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_stopped_database_is_503_with_retry_after_and_recent_tokens_still_work(
    tmp_path, kafka_bootstrap, topics, client
):
    database = EmbeddedPostgres(tmp_path / "pg").start()  # its own server: this test stops it
    service = None
    try:
        conn = await asyncpg.connect(database.dsn)
        try:
            await migrate(conn)
            _, known_token = await add_sensor(conn, "s-known", "zone-a", PITTSBURGH)
            _, fresh_token = await add_sensor(conn, "s-fresh", "zone-a", PITTSBURGH)
        finally:
            await conn.close()
        service = IngestService(
            ingest_settings(topics, token_cache_s=3.0, db_timeout_s=0.5, retry_after_s=4),
            bootstrap_servers=kafka_bootstrap,
            database_url=database.dsn,
        )
        await service.start()
        url = f"{service.url}/v1/detections"

        def post(sensor_id: str, token: str, n: int):
            return client.post(
                url,
                json={"detections": [detection(sensor_id, n, arrival_time=_now())]},
                headers={"Authorization": f"Bearer {token}"},
            )

        assert (await post("s-known", known_token, 1)).status_code == 202  # confirmed now

        database.stop()  # PostgreSQL is really down: connections are refused
        known = await post("s-known", known_token, 2)
        assert known.status_code == 202, known.text  # confirmed 3 s ago at most: served
        fresh = await post("s-fresh", fresh_token, 1)
        assert fresh.status_code == 503, fresh.text  # never confirmed: cannot be judged
        assert fresh.headers["retry-after"] == "4"
        assert "nothing from this request was accepted" in fresh.json()["detail"]
        check_response(service.app.openapi(), "/v1/detections", "post", 503, fresh.json())
        ready = await client.get(f"{service.url}/readyz")
        assert ready.status_code == 503 and ready.json()["database"] == "unreachable"

        await asyncio.sleep(3.2)  # past token_cache_s: a revocation would now count
        stale = await post("s-known", known_token, 3)
        assert stale.status_code == 503, stale.text

        records = await read_topic(kafka_bootstrap, topics.detections, 3, timeout_s=3)
        assert sorted(r.detection_id for _, r in records) == ["s-known-000001", "s-known-000002"]
    finally:
        if service is not None:
            await service.stop(5)
        database.stop()
