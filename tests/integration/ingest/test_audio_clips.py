"""POST /v1/detections/{id}/audio: auth, size, format, speech refusal, idempotency, retention."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.ingest.audio import expired, purge_expired
from shared.audio import encode_wav
from tests.integration.ingest.conftest import FrozenClock
from tests.support.audio import SR, impulses, speech_clip

NOW = datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)


def gunshot_clip(seconds: float = 2.0) -> bytes:
    return encode_wav(impulses([SR * 1.0 + 0.3], seconds, seed=5), SR)


async def _post(client, ingest, sensor, detection_id: str, body: bytes, **headers):
    return await client.post(
        f"{ingest.url}/v1/detections/{detection_id}/audio", content=body,
        headers={**sensor.headers, "Content-Type": "audio/wav", **headers},
    )


async def test_a_clip_is_kept_with_its_sha256_and_the_same_bytes_again_are_not_a_second(
    start_ingest, register, client, db
):
    sensor = await register("s-clip")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    clip = gunshot_clip()
    first = await _post(client, ingest, sensor, "on-1", clip)
    assert first.status_code == 201, first.text
    assert first.json()["sha256"] == hashlib.sha256(clip).hexdigest()
    again = await _post(client, ingest, sensor, "on-1", clip)
    assert again.status_code == 200
    other = await _post(client, ingest, sensor, "on-1", gunshot_clip(1.5))
    assert other.status_code == 409
    rows = await db.fetch("SELECT sensor_id, detection_id, wav FROM audio_clips")
    assert [(r["sensor_id"], r["detection_id"], bytes(r["wav"])) for r in rows] == [
        ("s-clip", "on-1", clip)
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Authorization": ""}, 401), ({"Authorization": "Bearer not-a-token"}, 401)],
)
async def test_a_clip_needs_the_sensors_token(start_ingest, register, client, db, headers, status):
    sensor = await register("s-auth")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    response = await _post(client, ingest, sensor, "on-2", gunshot_clip(), **headers)
    assert response.status_code == status
    assert await db.fetchval("SELECT count(*) FROM audio_clips") == 0


async def test_size_length_format_and_speech_are_refused_naming_why(
    start_ingest, register, client, db
):
    sensor = await register("s-size")
    ingest = await start_ingest(clock=FrozenClock(NOW), max_clip_bytes=40_000)
    big = await _post(client, ingest, sensor, "on-3", gunshot_clip(2.0))  # 48 kB
    assert big.status_code == 413 and "40000 bytes" in big.json()["detail"]
    ingest2 = await start_ingest(clock=FrozenClock(NOW))
    long = await _post(client, ingest2, sensor, "on-4", encode_wav(np.zeros(SR * 3), SR))
    assert long.status_code == 422 and "at most 2.05 s" in long.json()["detail"]
    notwav = await _post(client, ingest2, sensor, "on-5", b"RIFF....not a wav at all")
    assert notwav.status_code == 415
    speech = await _post(client, ingest2, sensor, "on-6", speech_clip())
    assert speech.status_code == 422 and "speech-like" in speech.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM audio_clips") == 0


# (received how long ago, held by, expected expired) with a 1-hour retention
RETENTION_CASES = [
    (timedelta(minutes=59), [], False),  # young: kept
    (timedelta(hours=1), [], True),  # exactly at retention: deleted
    (timedelta(days=30), [], True),  # old, unheld: deleted
    (timedelta(days=30), ["inc-1"], False),  # old but an incident holds it: kept
]


@pytest.mark.parametrize(("age", "held", "want"), RETENTION_CASES)
def test_expired_table(age, held, want) -> None:
    assert expired(NOW - age, held, NOW, 3600.0) is want


async def test_retention_deletes_unheld_clips_and_keeps_held_ones(
    start_ingest, register, client, db
):
    sensor = await register("s-ret")
    clock = FrozenClock(NOW)
    ingest = await start_ingest(clock=clock, clip_retention_s=3600.0)
    for did in ("on-old", "on-held", "on-young"):
        assert (await _post(client, ingest, sensor, did, gunshot_clip())).status_code == 201
    await db.execute("UPDATE audio_clips SET received_at = $1 WHERE detection_id <> 'on-young'",
                     NOW - timedelta(hours=2))
    await db.execute("UPDATE audio_clips SET held_by = '{inc-9}' WHERE detection_id = 'on-held'")
    removed = await purge_expired(ingest.app.state.ingest)
    assert removed == 1
    left = sorted(r["detection_id"] for r in await db.fetch("SELECT detection_id FROM audio_clips"))
    assert left == ["on-held", "on-young"]
