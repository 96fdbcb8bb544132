"""Audio clips in alerts: signed, expiring links to the clips of the sensors that located it.

A native JSON alert about a located incident carries, under ``data.audio``, one entry per
clip of a pulse the locator used (``round_details[].detection_keys``) that its sensor
uploaded to ingest (``audio_clips``): ``{"sensor_id", "detection_id", "url", "sha256",
"expires_at"}``. The URL is ``{public_url}/v1/clips/{sensor_id}/{detection_id}.wav?expires=
<unix s>&sig=<hex>`` with ``sig = HMAC-SHA256(clip_url_secret, "sensor_id/detection_id/
expires")``; it works until ``expires`` (``published_at`` of the incident version +
``clip_link_ttl_s``, so every retry of a delivery carries the same body), and the receiver
checks the bytes against ``sha256``. Every render of one incident version links the same
clips (:func:`links_for`). Linking a clip holds it: the ingest retention
(``SHOTLINE_INGEST_CLIP_RETENTION_S``) does not delete a clip an incident holds.

:func:`sign` and :func:`check` are pure; :func:`links_for` and the route are thin adapters.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from shared.schemas import IncidentRecord, format_time

router = APIRouter()

Verdict = Literal["ok", "expired", "forged"]


@dataclass(frozen=True)
class ClipLink:
    sensor_id: str
    detection_id: str
    url: str
    sha256: str
    expires_at: datetime

    def json(self) -> dict[str, str]:
        return {
            "sensor_id": self.sensor_id,
            "detection_id": self.detection_id,
            "url": self.url,
            "sha256": self.sha256,
            "expires_at": format_time(self.expires_at),
        }


def sign(secret: str, sensor_id: str, detection_id: str, expires: int) -> str:
    message = f"{sensor_id}/{detection_id}/{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check(
    secret: str, sensor_id: str, detection_id: str, expires: int, sig: str, now: datetime
) -> Verdict:
    """A link's verdict at ``now``: forged (wrong signature) before expired (a valid one
    past its time)."""
    if not hmac.compare_digest(sign(secret, sensor_id, detection_id, expires), sig):
        return "forged"
    if now.timestamp() >= expires:
        return "expired"
    return "ok"


def clip_url(base: str, secret: str, sensor_id: str, detection_id: str, expires: int) -> str:
    sig = sign(secret, sensor_id, detection_id, expires)
    return f"{base.rstrip('/')}/v1/clips/{sensor_id}/{detection_id}.wav?expires={expires}&sig={sig}"


def used_keys(incident: IncidentRecord) -> list[tuple[str, str]]:
    """(sensor_id, detection_id) of every pulse the located rounds used, in order, once."""
    seen: dict[tuple[str, str], None] = {}
    for rnd in incident.round_details:
        for key in rnd.detection_keys:
            sensor_id, _, detection_id = key.partition("/")
            seen.setdefault((sensor_id, detection_id), None)
    return list(seen)


async def links_for(
    pool: asyncpg.Pool, incident: IncidentRecord, *, base: str, secret: str, ttl_s: float
) -> list[ClipLink]:
    """Links to the uploaded clips of the pulses that located ``incident``; holds them.

    The first render of an incident version holds the clips present then under
    ``<incident_id>@<version>``; every later render of that version (a retry, another
    subscriber) links exactly those, so each attempt carries the same body. A clip that
    arrives later is linked by the next version.
    """
    keys = used_keys(incident)
    if not keys:
        return []
    expires_at = incident.published_at.astimezone(UTC) + timedelta(seconds=ttl_s)
    expires = int(expires_at.timestamp())
    holder = f"{incident.incident_id}@{incident.version}"
    sensors, detections = [k[0] for k in keys], [k[1] for k in keys]
    async with pool.acquire() as conn, conn.transaction():
        # one renderer at a time per version decides its set (an advisory lock on its name)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", holder)
        rows = await conn.fetch(
            """SELECT sensor_id, detection_id, sha256 FROM audio_clips
               WHERE (sensor_id, detection_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                 AND $3 = ANY(held_by)""",
            sensors, detections, holder,
        )
        if not rows:
            rows = await conn.fetch(
                """UPDATE audio_clips SET held_by = held_by || ARRAY[$3, $4]
                   WHERE (sensor_id, detection_id) IN
                         (SELECT * FROM unnest($1::text[], $2::text[]))
                   RETURNING sensor_id, detection_id, sha256""",
                sensors, detections, holder, incident.incident_id,
            )
    by_key = {(r["sensor_id"], r["detection_id"]): r["sha256"] for r in rows}
    return [
        ClipLink(s, d, clip_url(base, secret, s, d, expires), by_key[(s, d)],
                 datetime.fromtimestamp(expires, UTC))
        for s, d in keys
        if (s, d) in by_key
    ]


@router.get(
    "/v1/clips/{sensor_id}/{detection_id}.wav",
    summary="One detection's audio clip, through a signed link from an alert",
    responses={
        200: {"content": {"audio/wav": {}}},
        403: {"description": "Not a valid link"},
        404: {"description": "No such clip (deleted after its retention)"},
        410: {"description": "The link has expired"},
    },
)
async def get_clip(
    sensor_id: str, detection_id: str, request: Request, expires: int = 0, sig: str = ""
) -> Response:
    state = request.app.state.dispatch
    secret = state.settings.clip_url_secret
    if secret is None:
        return JSONResponse({"detail": "clip links are not enabled"}, status_code=404)
    verdict = check(secret.get_secret_value(), sensor_id, detection_id, expires, sig,
                    state.clock())
    if verdict == "forged":
        return JSONResponse({"detail": "not a valid clip link"}, status_code=403)
    if verdict == "expired":
        return JSONResponse({"detail": "this clip link has expired"}, status_code=410)
    wav = await state.pool.fetchval(
        "SELECT wav FROM audio_clips WHERE sensor_id = $1 AND detection_id = $2",
        sensor_id, detection_id,
    )
    if wav is None:
        return JSONResponse({"detail": "no such clip"}, status_code=404)
    return Response(bytes(wav), media_type="audio/wav",
                    headers={"Cache-Control": "private, no-store"})
