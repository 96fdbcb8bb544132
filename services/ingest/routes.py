"""HTTP handlers of ingest: parse, authorise, hand over to Kafka, report per item.

The order of checks is the order of cost: the token (one indexed query), the rate limit
(memory), the body size, then JSON and each item.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.ingest import metrics
from services.ingest.auth import bearer_token, hash_token
from services.ingest.docs import BATCH_EXAMPLES, ERROR_RESPONSES, REQUEST_SCHEMA
from services.ingest.registry import Sensor, sensor_for_token
from services.ingest.state import InFlight, IngestState, ToPublish
from services.ingest.validation import (
    STATUSES,
    FieldError,
    ItemResult,
    Status,
    check_time_window,
    content_digest,
    parse_items,
)
from shared.kafka import BrokerUnavailable, broker_answers
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


#: What a failed token lookup raises when PostgreSQL is down, restarting or unreachable.
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # a connection broken mid-operation, or no server answering as the DSN requires
    asyncpg.exceptions.InternalClientError,
)


async def _authenticate(request: Request, state: IngestState) -> Sensor | JSONResponse:
    """The sensor of the bearer token, or the error response to send.

    Asks PostgreSQL every time (a revocation counts from the next request). If it does not
    answer within ``db_timeout_s``, a token it confirmed within ``token_cache_s`` is still
    honoured; any other gets 503 with Retry-After (nothing was accepted).
    """
    token = bearer_token(request.headers.get("authorization"))
    challenge = {"WWW-Authenticate": "Bearer"}
    if token is None:
        return _error(401, "missing or malformed bearer token", headers=challenge)
    token_hash = hash_token(token)
    settings = state.settings
    try:
        async with asyncio.timeout(settings.db_timeout_s):  # no task per request, unlike wait_for
            sensor = await sensor_for_token(state.pool, token)
    except _DATABASE_ERRORS as exc:
        cached = state.tokens.get(token_hash, time.monotonic())
        if cached is None:
            state.log.warning("token lookup failed", extra={"error": repr(exc)})
            return _error(
                503,
                "the sensor registry (PostgreSQL) is unavailable; nothing from this request "
                "was accepted, resend it after Retry-After",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        sensor = cached
    else:
        if sensor is None:
            state.tokens.forget(token_hash)
            return _error(401, "unknown token", headers=challenge)
        state.tokens.confirmed(token_hash, sensor, time.monotonic())
    if not sensor.active:
        return _error(403, f"sensor {sensor.sensor_id} is revoked")
    return sensor


def _is_json(content_type: str | None) -> bool:
    """``application/json``, optionally with ``charset=utf-8`` (RFC 8259 allows no other)."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip() and (
            name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8"
        ):
            return False
    return True


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
        "security": [{"sensorToken": []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": REQUEST_SCHEMA, "examples": BATCH_EXAMPLES}},
        },
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

    if not _is_json(request.headers.get("content-type")):
        return _error(
            415,
            "the body must be JSON: send Content-Type: application/json",
            errors=[FieldError("Content-Type", "must be application/json")],
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
    to_send: list[tuple[int, DetectionIn, ToPublish]] = []
    waits: list[tuple[int, DetectionIn, InFlight]] = []  # resends of what is still in flight
    in_batch: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (first index, digest)
    twins: list[tuple[int, int]] = []  # (index, first index) of a repeat within the batch
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
        digest = content_digest(detection)
        flying = state.in_flight.get(key)
        known = state.recent.digest(key) if key in state.recent else None
        if key in in_batch:
            known = in_batch[key][1]
            twins.append((index, in_batch[key][0]))
        elif flying is not None:
            known = flying.digest
        if known is not None:
            status: Status = "duplicate" if known == digest else "conflict"
            results[index] = ItemResult(index, detection.detection_id, status)
            if status == "duplicate" and flying is not None and key not in in_batch:
                waits.append((index, detection, flying))  # its fate is that send's fate
            continue
        in_batch[key] = (index, digest)
        value = encode_detection_record(
            detection, zone=sensor.zone, position=registry_position, received_at=received_at
        )
        to_send.append((index, detection, ToPublish(key, digest, value)))
        results[index] = ItemResult(index, detection.detection_id, "accepted")

    if to_send and len(state.in_flight) + len(to_send) > settings.max_in_flight:
        # Back-pressure: Kafka is not keeping up; refuse rather than buffer without bound.
        for index, detection, _ in to_send:
            results[index] = ItemResult(index, detection.detection_id, "unavailable")
        to_send = []
    if to_send or waits:
        fates, wait_fates = await state.publish(
            sensor.zone,
            [item for _, _, item in to_send],
            [flying for _, _, flying in waits],
            timeout_s=settings.produce_timeout_s,
        )
        for index, detection, item in to_send:
            fate = fates[item.key]
            if fate == "acked":
                metrics.ARRIVAL_DELAY.observe(
                    max(0.0, (now - detection.arrival_time).total_seconds())
                )
            else:
                results[index] = ItemResult(index, detection.detection_id, fate)
        for (index, detection, _), wait_fate in zip(waits, wait_fates, strict=True):
            if wait_fate != "acked":
                results[index] = ItemResult(index, detection.detection_id, "unknown")
        metrics.DEDUP_ENTRIES.set(len(state.recent))
    for index, first in twins:  # a repeat within the batch shares its first copy's fate
        first_result, twin = results[first], results[index]
        if (
            first_result is not None
            and twin is not None
            and twin.status == "duplicate"
            and first_result.status in ("unknown", "unavailable")
        ):
            results[index] = ItemResult(index, twin.detection_id, first_result.status)
    state.last_seen[sensor.sensor_id] = now

    final = [r for r in results if r is not None]
    counts = {s: sum(1 for r in final if r.status == s) for s in STATUSES}
    for outcome, n in counts.items():
        if n:
            metrics.DETECTIONS.labels(outcome).inc(n)
    payload: dict[str, Any] = {**counts, "results": [_result_json(r) for r in final]}
    headers: dict[str, str] | None = None
    if counts["accepted"] or counts["duplicate"]:
        status_code = 202
    elif counts["unknown"] or counts["unavailable"]:
        status_code = 503
        headers = {"Retry-After": str(settings.retry_after_s)}
        payload["detail"] = (
            "the detection log (Kafka) did not acknowledge in time; items marked `unknown` "
            "may yet be stored, items marked `unavailable` are not: resend both after "
            "Retry-After (a stored one is then answered `duplicate`)"
            if counts["unknown"]
            else "the detection log (Kafka) is unavailable; nothing from this request was "
            "accepted, resend it after Retry-After"
        )
    else:
        status_code = 422
        payload["detail"] = "no detection in this request was accepted"
    metrics.REQUESTS.labels(str(status_code)).inc()
    metrics.REQUEST_LATENCY.observe(time.perf_counter() - started)
    return Response(
        orjson.dumps(payload),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


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
    """Ready when Kafka answers a metadata request and PostgreSQL a query, each within
    ``readiness_timeout_s`` (a frozen broker still accepts TCP connections)."""
    state: IngestState = request.app.state.ingest
    timeout_s = state.settings.readiness_timeout_s
    checks = {"kafka": "ok", "database": "ok"}
    try:
        await broker_answers(
            state.bootstrap_servers,
            timeout_s=timeout_s,
            connection=state.settings.kafka_connection(),
        )
    except BrokerUnavailable:
        checks["kafka"] = "unreachable"
    try:
        await asyncio.wait_for(state.pool.fetchval("SELECT 1"), timeout_s)
    except _DATABASE_ERRORS:
        checks["database"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(checks, status_code=200 if ok else 503)
