"""A JSON alert about a located incident links the clips of the sensors that located it:
signed URLs that work, that expire, whose bytes match the SHA-256 in the alert, and that
hold the clip against the retention."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from services.dispatch import clips
from shared.audio import encode_wav
from shared.schemas import Round
from tests.integration.dispatch.helpers import admin, incident, square
from tests.support.audio import SR, impulses

SECRET = "clip-links-test-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_alert_carries_working_expiring_clip_links(
    make_settings, services, receivers, publish, database_url
):
    conn = await asyncpg.connect(database_url)
    wavs = {}
    for sensor, det in (("s1", "on-a"), ("s2", "on-b")):
        wavs[(sensor, det)] = encode_wav(impulses([SR * 1.0], 2.0, seed=len(wavs)), SR)
        await conn.execute(
            "INSERT INTO audio_clips (sensor_id, detection_id, sha256, wav, sample_rate, "
            "duration_s, received_at) VALUES ($1, $2, $3, $4, $5, 2.0, now())",
            sensor, det, hashlib.sha256(wavs[(sensor, det)]).hexdigest(),
            wavs[(sensor, det)], SR,
        )
    port = _free_port()
    service = await services(make_settings(
        port=port, clip_url_secret=SECRET, public_url=f"http://127.0.0.1:{port}",
        clip_link_ttl_s=3600.0,
    ))
    hook = await receivers()
    base = incident()
    record = base.model_copy(update={"round_details": [Round(
        shot_time=base.shot_time, lat=base.location.lat, lon=base.location.lon,
        radius95_m=25.0, detection_keys=["s1/on-a", "s2/on-b", "s3/on-c"],  # s3: no clip
    )]})
    async with admin(service) as client:
        response = await client.post("/v1/subscriptions", json={
            "name": "cad", "channel": "webhook", "url": hook.url, "format": "json",
            "geofence": square(-79.99, 40.44),
        })
        assert response.status_code == 201, response.text
        await publish(record)
        (got,) = await hook.wait_for(1)
    audio = json.loads(got.body)["data"]["audio"]
    assert [(a["sensor_id"], a["detection_id"]) for a in audio] == [("s1", "on-a"), ("s2", "on-b")]
    expires = record.published_at + timedelta(seconds=3600)
    async with httpx.AsyncClient(timeout=10) as http:
        for link in audio:
            assert link["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
            clip = await http.get(link["url"])  # no admin token: the signature is the key
            assert clip.status_code == 200 and clip.headers["content-type"] == "audio/wav"
            assert hashlib.sha256(clip.content).hexdigest() == link["sha256"]
            assert clip.content == wavs[(link["sensor_id"], link["detection_id"])]
            forged = link["url"].replace("sig=", "sig=0")
            assert (await http.get(forged)).status_code == 403
        past = int((datetime.now(UTC) - timedelta(seconds=1)).timestamp())
        stale = clips.clip_url(f"http://127.0.0.1:{port}", SECRET, "s1", "on-a", past)
        assert (await http.get(stale)).status_code == 410
    holder = [f"{record.incident_id}@1", record.incident_id]
    held = await conn.fetch("SELECT detection_id, held_by FROM audio_clips ORDER BY 1")
    assert [(r["detection_id"], r["held_by"]) for r in held] == [("on-a", holder),
                                                                 ("on-b", holder)]

    # a clip that arrives after the alert went out: a retry of that version links the same
    # clips (the same body), the next version links it too
    late = encode_wav(impulses([SR * 1.0], 2.0, seed=9), SR)
    await conn.execute(
        "INSERT INTO audio_clips (sensor_id, detection_id, sha256, wav, sample_rate, "
        "duration_s, received_at) VALUES ('s3', 'on-c', $1, $2, $3, 2.0, now())",
        hashlib.sha256(late).hexdigest(), late, SR,
    )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        again = await clips.links_for(pool, record, base="http://x", secret=SECRET, ttl_s=3600)
        assert [(c.sensor_id, c.detection_id) for c in again] == [("s1", "on-a"), ("s2", "on-b")]
        v2 = record.model_copy(update={"version": 2, "event": "updated"})
        later = await clips.links_for(pool, v2, base="http://x", secret=SECRET, ttl_s=3600)
        assert [c.sensor_id for c in later] == ["s1", "s2", "s3"]
    finally:
        await pool.close()
    await conn.close()


# (signed for, presented, now vs expiry, verdict)
CHECK_CASES = [
    ("s1/d1", "s1/d1", -1, "ok"),
    ("s1/d1", "s1/d1", +1, "expired"),
    ("s1/d1", "s1/d2", -1, "forged"),  # a link for one clip does not open another
    ("s1/d1", "s2/d1", +1, "forged"),  # forged before expired
]


def test_check_table() -> None:
    now = datetime(2026, 12, 8, tzinfo=UTC)
    for signed, presented, offset, want in CHECK_CASES:
        expires = int(now.timestamp()) - offset
        sig = clips.sign(SECRET, *signed.split("/"), expires)
        assert clips.check(SECRET, *presented.split("/"), expires, sig, now) == want
