"""POST /v1/detections against a real broker and a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from services.ingest.registry import revoke_sensor, rotate_token
from tests.integration.ingest.conftest import FrozenClock, read_topic

NOW = datetime(2026, 11, 25, 1, 2, 3, 500000, tzinfo=UTC)


def detection(sensor_id: str, n: int, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "detection_id": f"{sensor_id}-{n:06d}",
        "sensor_id": sensor_id,
        "arrival_time": "2026-11-25T01:02:03.123457Z",
    }
    body.update(fields)
    return body


async def test_accepted_detection_is_on_the_topic_with_every_field_exact(
    start_ingest, register, client, kafka_bootstrap, topics
):
    sensor = await register("s-1", zone="north")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    posted = detection(
        "s-1",
        1,
        arrival_time="2026-11-25T01:02:03.000001Z",
        position={"lat": 40.44123456, "lon": -79.99654321, "alt_m": 31.25},
        peak_db=131.5,
        snr_db=27.25,
        rise_time_ms=0.35,
        duration_ms=2.5,
        spectral_centroid_hz=1875.5,
        temperature_c=-3.5,
    )
    answer = await client.post(
        f"{ingest.url}/v1/detections", json={"detections": [posted]}, headers=sensor.headers
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["results"] == [
        {"index": 0, "detection_id": "s-1-000001", "status": "accepted"}
    ]

    [(key, record)] = await read_topic(kafka_bootstrap, topics.detections, 1)
    assert key == b"north"  # partitioned by the sensor's coverage zone
    raw = orjson.loads(record.model_dump_json())
    assert raw["arrival_time"] == "2026-11-25T01:02:03.000001Z"  # the microsecond survives
    assert raw["position"] == {"lat": 40.44123456, "lon": -79.99654321, "alt_m": 31.25}
    assert raw["features"] == {
        "peak_db": 131.5,
        "snr_db": 27.25,
        "rise_time_ms": 0.35,
        "duration_ms": 2.5,
        "spectral_centroid_hz": 1875.5,
    }
    assert raw["temperature_c"] == -3.5
    assert raw["zone"] == "north"
    assert raw["schema_version"] == 1
    assert raw["received_at"] == "2026-11-25T01:02:03.500000Z"


async def test_sensor_without_a_fix_gets_its_registered_position(
    start_ingest, register, client, kafka_bootstrap, topics
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    answer = await client.post(
        f"{ingest.url}/v1/detections",
        json={"detections": [detection("s-1", 1)]},
        headers=sensor.headers,
    )
    assert answer.status_code == 202
    [(_, record)] = await read_topic(kafka_bootstrap, topics.detections, 1)
    assert (record.position.lat, record.position.lon, record.position.alt_m) == (
        40.4406,
        -79.9959,
        20.0,
    )


async def test_mixed_batch_reports_each_item(
    start_ingest, register, client, kafka_bootstrap, topics
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    batch = [
        detection("s-1", 1),
        detection("s-1", 2, arrival_time="yesterday"),
        detection("s-1", 3, arrival_time="2026-11-25T01:02:13Z"),  # 9.5 s ahead
        detection("s-1", 1),  # same id again in the same batch
        detection("s-1", 5, snr_db="loud"),
        detection("s-1", 6, arrival_time="2026-11-25T00:50:00Z"),  # 12 min old
    ]
    answer = await client.post(
        f"{ingest.url}/v1/detections", json={"detections": batch}, headers=sensor.headers
    )
    assert answer.status_code == 202
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (1, 1, 4)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "accepted"),
        (1, "rejected"),
        (2, "rejected"),
        (3, "duplicate"),
        (4, "rejected"),
        (5, "rejected"),
    ]
    fields = {r["index"]: r["errors"][0]["field"] for r in body["results"] if "errors" in r}
    assert fields == {
        1: "detections[1].arrival_time",
        2: "detections[2].arrival_time",
        4: "detections[4].snr_db",
        5: "detections[5].arrival_time",
    }
    reasons = {r["index"]: r["errors"][0]["reason"] for r in body["results"] if "errors" in r}
    assert "future" in reasons[2]
    assert "old" in reasons[5]
    on_topic = await read_topic(kafka_bootstrap, topics.detections, 1)
    assert [r.detection_id for _, r in on_topic] == ["s-1-000001"]


async def test_posting_the_same_detection_twice_is_a_duplicate_and_written_once(
    start_ingest, register, client, kafka_bootstrap, topics
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    body = {"detections": [detection("s-1", 7)]}
    first = await client.post(f"{ingest.url}/v1/detections", json=body, headers=sensor.headers)
    second = await client.post(f"{ingest.url}/v1/detections", json=body, headers=sensor.headers)
    assert first.json()["results"][0]["status"] == "accepted"
    assert second.status_code == 202
    assert second.json()["results"][0]["status"] == "duplicate"
    assert len(await read_topic(kafka_bootstrap, topics.detections, 2, timeout_s=2)) == 1


async def test_a_reused_id_with_other_content_is_a_conflict_and_the_new_content_is_dropped(
    start_ingest, register, client, kafka_bootstrap, topics
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    url = f"{ingest.url}/v1/detections"
    first = await client.post(
        url, json={"detections": [detection("s-1", 7, peak_db=120.0)]}, headers=sensor.headers
    )
    assert first.json()["results"][0]["status"] == "accepted"
    # the same content spelled otherwise (an int for the float, another offset) is the same
    same = detection("s-1", 7, peak_db=120, arrival_time="2026-11-25T02:02:03.123457+01:00")
    reused = detection("s-1", 7, peak_db=99.0)  # a sensor whose id scheme repeats ids
    twin = detection("s-1", 8)
    twin_changed = detection("s-1", 8, snr_db=3.0)
    answer = await client.post(
        url, json={"detections": [same, reused, twin, twin_changed]}, headers=sensor.headers
    )
    assert answer.status_code == 202
    assert [r["status"] for r in answer.json()["results"]] == [
        "duplicate",
        "conflict",
        "accepted",
        "conflict",  # within one batch too
    ]
    assert answer.json()["conflict"] == 2
    on_topic = await read_topic(kafka_bootstrap, topics.detections, 3, timeout_s=2)
    assert [(r.detection_id, r.features.peak_db) for _, r in on_topic] == [
        ("s-1-000007", 120.0),
        ("s-1-000008", None),
    ]
    metrics = (await client.get(f"{ingest.url}/metrics")).text
    assert 'shotline_ingest_detections_total{outcome="conflict"}' in metrics


async def test_only_json_is_accepted_other_media_types_are_415(start_ingest, register, client):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    body = orjson.dumps({"detections": [detection("s-1", 1)]})
    url = f"{ingest.url}/v1/detections"
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/jsonx",
    ):
        headers = dict(sensor.headers)
        if content_type is not None:
            headers["content-type"] = content_type
        answer = await client.post(url, content=body, headers=headers)
        assert answer.status_code == 415, content_type
        assert answer.json()["errors"][0]["field"] == "Content-Type"
    for content_type in ("application/json", "Application/JSON; charset=UTF-8"):
        answer = await client.post(
            url, content=body, headers={**sensor.headers, "content-type": content_type}
        )
        assert answer.status_code == 202, content_type


async def test_a_request_with_nothing_accepted_is_422_naming_the_field(
    start_ingest, register, client
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    answer = await client.post(
        f"{ingest.url}/v1/detections",
        json={"detections": [detection("s-1", 1, position={"lat": 91, "lon": 0})]},
        headers=sensor.headers,
    )
    assert answer.status_code == 422
    [result] = answer.json()["results"]
    assert result["errors"][0]["field"] == "detections[0].position.lat"


async def test_malformed_bodies_are_422_naming_the_problem(start_ingest, register, client):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    url = f"{ingest.url}/v1/detections"
    cases = [
        (b"{not json", "body"),  # not JSON at all
        (b'{"items": []}', "body"),  # wrong shape
        (b'{"detections": []}', "detections"),  # empty batch
        (orjson.dumps({"detections": [detection("s-1", i) for i in range(1001)]}), "detections"),
    ]
    for raw, field in cases:
        answer = await client.post(
            url, content=raw, headers={**sensor.headers, "content-type": "application/json"}
        )
        assert answer.status_code == 422, raw[:40]
        assert answer.json()["errors"][0]["field"] == field


async def test_body_over_the_limit_is_413(start_ingest, register, client):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW), max_body_bytes=4096)
    big = {"detections": [detection("s-1", i) for i in range(100)]}
    answer = await client.post(f"{ingest.url}/v1/detections", json=big, headers=sensor.headers)
    assert answer.status_code == 413


async def test_authentication_failures(start_ingest, register, client, db):
    sensor = await register("s-1")
    other = await register("s-2")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    url = f"{ingest.url}/v1/detections"
    body = {"detections": [detection("s-1", 1)]}

    missing = await client.post(url, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    unknown = await client.post(url, json=body, headers={"Authorization": "Bearer shl_" + "x" * 43})
    assert unknown.status_code == 401

    # s-2's token cannot post s-1's detections
    impostor = await client.post(url, json=body, headers=other.headers)
    assert impostor.status_code == 403
    assert impostor.json()["errors"][0]["field"] == "detections[0].sensor_id"

    # revocation takes effect on the very next request
    assert (await client.post(url, json=body, headers=sensor.headers)).status_code == 202
    await revoke_sensor(db, "s-1")
    revoked = await client.post(
        url, json={"detections": [detection("s-1", 2)]}, headers=sensor.headers
    )
    assert revoked.status_code == 403
    assert "revoked" in revoked.json()["detail"]


async def test_rotated_token_replaces_the_old_one_at_once(start_ingest, register, client, db):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    url = f"{ingest.url}/v1/detections"
    new_token = await rotate_token(db, "s-1")
    old = await client.post(url, json={"detections": [detection("s-1", 1)]}, headers=sensor.headers)
    assert old.status_code == 401
    new = await client.post(
        url,
        json={"detections": [detection("s-1", 1)]},
        headers={"Authorization": f"Bearer {new_token}"},
    )
    assert new.status_code == 202


async def test_too_many_requests_from_one_sensor_is_429_with_retry_after(
    start_ingest, register, client
):
    sensor = await register("s-1")
    quiet = await register("s-2")
    ingest = await start_ingest(clock=FrozenClock(NOW), rate_per_sensor_per_s=0.5, rate_burst=2)
    url = f"{ingest.url}/v1/detections"
    codes = [
        (await client.post(url, json={"detections": [detection("s-1", i)]}, headers=sensor.headers))
        for i in range(3)
    ]
    assert [c.status_code for c in codes] == [202, 202, 429]
    assert int(codes[2].headers["retry-after"]) >= 1
    # the limit is per sensor: another sensor is unaffected
    other = await client.post(
        url, json={"detections": [detection("s-2", 1)]}, headers=quiet.headers
    )
    assert other.status_code == 202


async def test_last_seen_is_kept_current_without_a_write_per_detection(
    start_ingest, register, client, db
):
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW), last_seen_flush_s=0.1)
    await client.post(
        f"{ingest.url}/v1/detections",
        json={"detections": [detection("s-1", 1)]},
        headers=sensor.headers,
    )
    import asyncio

    for _ in range(50):
        seen = await db.fetchval("SELECT last_seen_at FROM sensors WHERE sensor_id = 's-1'")
        if seen is not None:
            break
        await asyncio.sleep(0.05)
    assert seen == NOW


async def test_health_ready_metrics_and_openapi(start_ingest, client):
    ingest = await start_ingest()
    assert (await client.get(f"{ingest.url}/healthz")).json() == {"status": "ok"}
    ready = await client.get(f"{ingest.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"kafka": "ok", "database": "ok"}
    assert "shotline_ingest_requests_total" in (await client.get(f"{ingest.url}/metrics")).text
    spec = (await client.get(f"{ingest.url}/openapi.json")).json()
    post = spec["paths"]["/v1/detections"]["post"]
    assert post["requestBody"]["content"]["application/json"]["examples"]
    for status in ("202", "401", "403", "413", "422", "429", "503"):
        assert post["responses"][status]["content"]["application/json"]["example"], status


async def test_time_window_uses_the_service_clock(start_ingest, register, client):
    """A pulse exactly at the tolerance is fine; a microsecond more is not."""
    sensor = await register("s-1")
    clock = FrozenClock(NOW)
    ingest = await start_ingest(clock=clock, clock_tolerance_s=2.0)
    url = f"{ingest.url}/v1/detections"
    at_limit = (NOW + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    beyond = (NOW + timedelta(seconds=2, microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ok = await client.post(
        url,
        json={"detections": [detection("s-1", 1, arrival_time=at_limit)]},
        headers=sensor.headers,
    )
    bad = await client.post(
        url, json={"detections": [detection("s-1", 2, arrival_time=beyond)]}, headers=sensor.headers
    )
    assert (ok.status_code, bad.status_code) == (202, 422)


async def test_migrations_apply_to_an_empty_database_and_rerun(empty_database_url):
    from shared.db import load_migrations, migrate

    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in load_migrations()]
        assert await migrate(conn) == []  # re-runnable: nothing left to do
        assert await conn.fetchval("SELECT count(*) FROM sensors") == 0
    finally:
        await conn.close()


def _sample(exposition: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics text (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_every_accepted_batch_observes_kafkas_ack_time(start_ingest, register, client):
    """shotline_ingest_kafka_ack_seconds (IngestSlowAcks' input) is observed for what was
    handed to Kafka (per batch or per detection: 2 to 4 observations for two batches of two),
    and not for a request that sent nothing."""
    sensor = await register("s-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    before = await client.get(f"{ingest.url}/metrics")
    count_before = _sample(before.text, "shotline_ingest_kafka_ack_seconds_count")
    for n in (1, 2):
        batch = {"detections": [detection("s-1", n), detection("s-1", n + 10)]}
        answer = await client.post(
            f"{ingest.url}/v1/detections", json=batch, headers=sensor.headers
        )
        assert answer.status_code == 202, answer.text
    duplicate = {"detections": [detection("s-1", 1)]}  # nothing new: nothing sent to Kafka
    assert (
        await client.post(f"{ingest.url}/v1/detections", json=duplicate, headers=sensor.headers)
    ).json()["duplicate"] == 1
    after = (await client.get(f"{ingest.url}/metrics")).text
    observed = _sample(after, "shotline_ingest_kafka_ack_seconds_count") - count_before
    assert 2 <= observed <= 4, observed
    for _ in range(3):  # a duplicate-only request adds none
        assert (
            await client.post(f"{ingest.url}/v1/detections", json=duplicate, headers=sensor.headers)
        ).status_code == 202
    final = (await client.get(f"{ingest.url}/metrics")).text
    assert _sample(final, "shotline_ingest_kafka_ack_seconds_count") == _sample(
        after, "shotline_ingest_kafka_ack_seconds_count"
    )
    assert 0 < _sample(after, "shotline_ingest_kafka_ack_seconds_sum") < 10
