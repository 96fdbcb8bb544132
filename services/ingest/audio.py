"""``POST /v1/detections/{detection_id}/audio``: a detection's short clip, and its retention.

A sensor may upload, with its own token, one clip per detection: the impulse with at most
1 s either side, as a mono 16-bit PCM WAV. Ingest refuses (naming why):

* no or a wrong token (401), a revoked sensor (403);
* a body larger than ``max_clip_bytes`` (413), or not a mono 16-bit WAV (415);
* a clip longer than ``max_clip_s`` (2.05 s: 1 s either side of the onset; 422) — never
  continuous audio;
* a clip that is mostly speech-like sound (the voice-band loudness check of
  :mod:`shared.audio`, ``clip_max_voice_share``; 422): it is not kept;
* a second, different clip for the same detection (409; the same bytes again are 200).

Clips are deleted ``clip_retention_s`` after they arrived unless an incident holds them
(``held_by``, filled by dispatch when an alert links them); :func:`expired` decides, the
purge loop runs every ``clip_purge_interval_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import wave
from datetime import datetime, timedelta

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest.routes import _authenticate, _error, _read_body
from services.ingest.state import IngestState
from shared.audio import ClipPolicy, speech_like_share
from shared.schemas import format_time, is_identifier

router = APIRouter()


def expired(received_at: datetime, held_by: list[str], now: datetime, retention_s: float) -> bool:
    """Whether a clip is to be deleted now (pure): past retention and held by no incident."""
    return not held_by and now - received_at >= timedelta(seconds=retention_s)


def read_wav(body: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of a mono 16-bit PCM WAV; ``ValueError`` naming what is wrong."""
    try:
        with wave.open(io.BytesIO(body), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(
                    f"a clip must be mono 16-bit PCM, got {w.getnchannels()} channel(s) of "
                    f"{8 * w.getsampwidth()} bit"
                )
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a WAV file ({exc})") from None
    return np.frombuffer(frames, dtype="<i2").astype(np.float64), rate


@router.post(
    "/v1/detections/{detection_id}/audio",
    summary="Upload one detection's clip (mono 16-bit WAV, at most 1 s either side)",
    responses={
        201: {"description": "Kept"},
        200: {"description": "Already kept (the same bytes)"},
        409: {"description": "A different clip is already kept for this detection"},
        413: {"description": "Larger than max_clip_bytes"},
        415: {"description": "Not a mono 16-bit WAV"},
        422: {"description": "Too long, or mostly speech-like sound: not kept"},
    },
)
async def post_clip(detection_id: str, request: Request) -> JSONResponse:
    state: IngestState = request.app.state.ingest
    settings = state.settings
    sensor = await _authenticate(request, state)
    if isinstance(sensor, JSONResponse):
        return sensor
    if not is_identifier(detection_id):
        return _error(422, "detection_id: not an identifier")
    body = await _read_body(request, settings.max_clip_bytes)
    if body is None:
        return _error(413, f"clip larger than {settings.max_clip_bytes} bytes")
    try:
        samples, rate = read_wav(body)
    except ValueError as exc:
        return _error(415, str(exc))
    duration = samples.size / rate if rate else 0.0
    if not 0 < duration <= settings.max_clip_s:
        return _error(
            422, f"clip is {duration:.2f} s; at most {settings.max_clip_s} s (1 s either side)"
        )
    policy = ClipPolicy(max_voice_share=settings.clip_max_voice_share)
    share = speech_like_share(samples, rate, None, policy)
    if policy.enabled and share > policy.max_voice_share:
        return _error(
            422,
            f"clip is mostly speech-like sound ({share:.0%} of it; at most "
            f"{policy.max_voice_share:.0%}): not kept",
        )
    digest = hashlib.sha256(body).hexdigest()
    now = state.clock()
    async with state.pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO audio_clips (sensor_id, detection_id, sha256, wav, sample_rate,
                                        duration_s, received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (sensor_id, detection_id) DO NOTHING
               RETURNING sha256""",
            sensor.sensor_id, detection_id, digest, body, rate, duration, now,
        )
        if row is None:
            kept = await conn.fetchval(
                "SELECT sha256 FROM audio_clips WHERE sensor_id = $1 AND detection_id = $2",
                sensor.sensor_id, detection_id,
            )
            if kept != digest:
                return _error(409, f"a different clip is already kept for {detection_id}")
            return JSONResponse({"sha256": digest, "status": "duplicate"}, status_code=200)
    return JSONResponse(
        {"sha256": digest, "status": "kept", "bytes": len(body),
         "delete_after": format_time(now + timedelta(seconds=settings.clip_retention_s))},
        status_code=201,
    )


async def purge_expired(state: IngestState) -> int:
    """Delete the clips :func:`expired` says are due; returns how many."""
    cutoff = state.clock() - timedelta(seconds=state.settings.clip_retention_s)
    result = await state.pool.execute(
        "DELETE FROM audio_clips WHERE held_by = '{}' AND received_at <= $1", cutoff
    )
    return int(result.split()[-1])


async def purge_loop(state: IngestState) -> None:
    while True:
        await asyncio.sleep(state.settings.clip_purge_interval_s)
        try:
            removed = await purge_expired(state)
        except Exception:
            state.log.exception("could not purge expired audio clips")
            continue
        if removed:
            state.log.info("deleted %d audio clips past their retention", removed)
