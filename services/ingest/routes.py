"""HTTP handlers of ingest: parse, authorise, hand over to Kafka, report per item.

The order of checks is the order of cost: the token (one indexed query), the rate limit
(memory), the body size, then JSON and each item.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.ingest import metrics
from services.ingest.auth import bearer_token
from services.ingest.docs import BATCH_EXAMPLES, ERROR_RESPONSES, REQUEST_SCHEMA
from services.ingest.registry import Sensor, sensor_for_token
from services.ingest.state import IngestState
from services.ingest.validation import (
    FieldError,
    ItemResult,
    check_time_window,
    parse_items,
)
from shared.kafka import wait_for_broker
from shared.schemas import DetectionIn, encode_detection_record, format_time

router = APIRouter()


def _error(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = [{"field": e.field, "reason": e.reason} for e in errors]
    if extra:
        body.update(extra)
    metrics.REQUESTS.labels(str(status)).inc()
    return JSONResponse(body, status_code=status, headers=headers)


def _result_json(result: ItemResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": result.index,
        "detection_id": result.detection_id,
        "status": result.status,
    }
    if result.errors:
        out["errors"] = [{"field": e.field, "reason": e.reason} for e in result.errors]
    return out


async def _authenticate(request: Request, state: IngestState) -> Sensor | JSONResponse:
    token = bearer_token(request.headers.get("authorization"))
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        return _error(401, "missing or malformed bearer token", headers=challenge)
    sensor = await sensor_for_token(state.pool, token)
    if sensor is None:
        return _error(401, "unknown token", headers=challenge)
    if not sensor.active:
        return _error(403, f"sensor {sensor.sensor_id} is revoked")
    return sensor


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None if it is larger than ``limit`` (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/detections",
    status_code=202,
    summary="Post a batch of detections (1 to 1,000)",
    description=(
        "Answers 202 only after Kafka acknowledged every accepted detection. The body reports "
        "each item as `accepted`, `duplicate` (already have it: do not resend) or `rejected` "
        "(with the field and reason: fix, then resend). If no item is accepted or duplicate "
        "the answer is 422 with the same per-item report. `detection_id` is the idempotency "
        "key: posting a detection twice never leads to a second incident or alert."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST_SCHEMA, "examples": BATCH_EXAMPLES}},
        }
    },
    responses=ERROR_RESPONSES,
)
async def post_detections(request: Request) -> Response:
    state: IngestState = request.app.state.ingest
    started = time.perf_counter()
    settings = state.settings

    sensor = await _authenticate(request, state)
    if isinstance(sensor, JSONResponse):
        return sensor

    wait = state.rate_limit.take(sensor.sensor_id, time.monotonic())
    if wait is not None:
        retry_after = max(1, int(wait + 0.999))
        return _error(
            429,
            f"too many requests from sensor {sensor.sensor_id}",
            headers={"Retry-After": str(retry_after)},
        )

    raw = await _read_body(request, settings.max_body_bytes)
    if raw is None:
        return _error(413, f"body larger than {settings.max_body_bytes} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(422, "body is not valid JSON", errors=[FieldError("body", str(exc))])
    items = body.get("detections") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) - {"detections"}:
        return _error(
            422,
            "body must be an object with only a `detections` array",
            errors=[FieldError("body", 'expected {"detections": [...]}')],
        )
    if not isinstance(items, list) or not 1 <= len(items) <= settings.max_batch:
        return _error(
            422,
            f"`detections` must be an array of 1 to {settings.max_batch} items",
            errors=[FieldError("detections", f"must hold 1 to {settings.max_batch} items")],
        )

    now = state.clock()
    tolerance = timedelta(seconds=settings.clock_tolerance_s)
    max_age = timedelta(seconds=settings.max_age_s)
    received_at = format_time(now)
    registry_position = sensor.position.model_dump()
    results: list[ItemResult | None] = [None] * len(items)
    to_send: list[tuple[DetectionIn, bytes]] = []
    in_batch: set[tuple[str, str]] = set()
    for index, parsed in enumerate(parse_items(items)):
        if isinstance(parsed, tuple):
            item = items[index]
            detection_id = item.get("detection_id") if isinstance(item, dict) else None
            results[index] = ItemResult(
                index, detection_id if isinstance(detection_id, str) else None, "rejected", parsed
            )
            continue
        detection: DetectionIn = parsed
        if detection.sensor_id != sensor.sensor_id:
            return _error(
                403,
                f"sensor {sensor.sensor_id} may post only its own detections",
                errors=[
                    FieldError(
                        f"detections[{index}].sensor_id",
                        f"is {detection.sensor_id!r}, the token belongs to {sensor.sensor_id!r}",
                    )
                ],
            )
        late_or_early = check_time_window(
            detection, index, now=now, clock_tolerance=tolerance, max_age=max_age
        )
        if late_or_early is not None:
            results[index] = ItemResult(index, detection.detection_id, "rejected", (late_or_early,))
            continue
        key = (detection.sensor_id, detection.detection_id)
        if key in state.recent or key in in_batch:
            results[index] = ItemResult(index, detection.detection_id, "duplicate")
            continue
        in_batch.add(key)
        value = encode_detection_record(
            detection, zone=sensor.zone, position=registry_position, received_at=received_at
        )
        to_send.append((detection, value))
        results[index] = ItemResult(index, detection.detection_id, "accepted")

    if to_send:
        try:
            await asyncio.wait_for(
                state.publish(sensor.zone, [value for _, value in to_send]),
                settings.produce_timeout_s,
            )
        except (TimeoutError, *state.kafka_errors) as exc:
            state.log.warning("kafka did not acknowledge", extra={"error": repr(exc)})
            return _error(
                503,
                "the detection log (Kafka) is unavailable; nothing from this request was "
                "accepted, resend it after Retry-After",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        for detection, _ in to_send:
            state.recent.remember((detection.sensor_id, detection.detection_id), now)
            metrics.ARRIVAL_DELAY.observe(
                max(0.0, (now - detection.arrival_time).total_seconds())
            )
        metrics.DEDUP_ENTRIES.set(len(state.recent))
    state.last_seen[sensor.sensor_id] = now

    final = [r for r in results if r is not None]
    counts = {
        s: sum(1 for r in final if r.status == s) for s in ("accepted", "duplicate", "rejected")
    }
    for outcome, n in counts.items():
        metrics.DETECTIONS.labels(outcome).inc(n)
    status = 202 if counts["accepted"] or counts["duplicate"] else 422
    metrics.REQUESTS.labels(str(status)).inc()
    metrics.REQUEST_LATENCY.observe(time.perf_counter() - started)
    payload: dict[str, Any] = {**counts, "results": [_result_json(r) for r in final]}
    if status == 422:
        payload["detail"] = "no detection in this request was accepted"
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get(
    "/healthz",
    summary="Alive",
    responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}},
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready: broker and database reachable",
    responses={
        200: {"content": {"application/json": {"example": {"kafka": "ok", "database": "ok"}}}},
        503: {
            "content": {"application/json": {"example": {"kafka": "unreachable", "database": "ok"}}}
        },
    },
)
async def readyz(request: Request) -> JSONResponse:
    state: IngestState = request.app.state.ingest
    checks = {"kafka": "ok", "database": "ok"}
    try:
        await wait_for_broker(state.bootstrap_servers, timeout_s=0.5)
    except Exception:
        checks["kafka"] = "unreachable"
    try:
        await asyncio.wait_for(state.pool.fetchval("SELECT 1"), 1.0)
    except Exception:
        checks["database"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(checks, status_code=200 if ok else 503)
