"""Posting detections (and clips) to ingest with the sensor's token (thin HTTP adapter).

Every answer is sorted into what the sensor does next:

* ``202``/``422`` carry a result per item: ``accepted`` and ``duplicate`` are done;
  ``rejected`` is done too (resending the same body cannot change ingest's mind; the field
  and reason are logged).
* ``401``/``403``: the token is wrong or the sensor revoked — :class:`UplinkRefused`, which
  stops the sensor with one line (retrying would only hammer ingest).
* ``413``: the batch is too large: the caller halves it.
* ``429``, ``5xx`` and network errors: transient — keep everything queued, wait
  (``Retry-After`` if given) and resend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

log = logging.getLogger("shotline.sensor")


class UplinkRefused(Exception):
    """Ingest refused the sensor itself (bad token, revoked): stop, do not retry."""


@dataclass
class PostResult:
    done: list[str] = field(default_factory=list)  # ids to drop from the queue
    statuses: dict[str, str] = field(default_factory=dict)  # id -> accepted/duplicate/rejected
    transient: str | None = None  # why nothing was settled (retry later)
    retry_after_s: float | None = None
    too_large: bool = False


class Uplink:
    def __init__(self, ingest_url: str, token: str, client: httpx.AsyncClient) -> None:
        self.base = ingest_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = client

    async def post(self, bodies: list[dict]) -> PostResult:
        result = PostResult()
        try:
            response = await self._client.post(
                f"{self.base}/v1/detections", json={"detections": bodies}, headers=self._headers
            )
        except httpx.HTTPError as exc:
            result.transient = f"ingest unreachable: {type(exc).__name__}: {exc}"
            return result
        status = response.status_code
        if status in (401, 403):
            raise UplinkRefused(f"ingest refused this sensor ({status}): {_detail(response)}")
        if status == 413:
            result.too_large = True
            return result
        if status in (202, 422):
            try:
                items = response.json()["results"]
            except (ValueError, KeyError, TypeError):
                result.transient = f"ingest answered {status} without per-item results"
                return result
            for item in items:
                did = item.get("detection_id") or bodies[item["index"]]["detection_id"]
                result.statuses[did] = item["status"]
                result.done.append(did)
                if item["status"] == "rejected":
                    log.warning("ingest rejected %s: %s", did, item.get("errors"))
            return result
        result.transient = f"ingest answered {status}: {_detail(response)}"
        retry = response.headers.get("retry-after")
        if retry and retry.isdigit():
            result.retry_after_s = float(retry)
        return result

    async def post_clip(self, detection_id: str, wav: bytes) -> int:
        """Upload one detection's clip; returns the HTTP status (0 if unreachable)."""
        try:
            response = await self._client.post(
                f"{self.base}/v1/detections/{detection_id}/audio",
                content=wav,
                headers={**self._headers, "Content-Type": "audio/wav"},
            )
        except httpx.HTTPError:
            return 0
        return response.status_code


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]
