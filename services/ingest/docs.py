"""OpenAPI material for ingest: the request schema and an example for every request and error."""

from __future__ import annotations

from typing import Any

from shared.schemas import DetectionIn

_ITEM = DetectionIn.model_json_schema(mode="validation")

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detections"],
    "additionalProperties": False,
    "properties": {
        "detections": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _ITEM}
    },
    "$defs": _ITEM.pop("$defs", {}),
}

_ONE = {
    "detection_id": "s-0042-000913",
    "sensor_id": "s-0042",
    "arrival_time": "2026-11-25T01:02:03.123456Z",
    "peak_db": 128.5,
    "snr_db": 31.0,
    "rise_time_ms": 0.4,
    "duration_ms": 2.1,
    "spectral_centroid_hz": 1850.0,
    "temperature_c": 4.5,
}

BATCH_EXAMPLES: dict[str, Any] = {
    "single": {"summary": "One detection", "value": {"detections": [_ONE]}},
    "with_fix": {
        "summary": "A mobile sensor reporting its own GPS fix",
        "value": {
            "detections": [
                {
                    "detection_id": "s-0042-000914",
                    "sensor_id": "s-0042",
                    "arrival_time": "2026-11-25T01:02:04.000250Z",
                    "position": {"lat": 40.4406, "lon": -79.9959, "alt_m": 12.0},
                }
            ]
        },
    },
}


def _example(description: str, value: Any, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"example": value}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: _example(
        "Every accepted item is on the detections topic (Kafka acknowledged it)",
        {
            "accepted": 1,
            "duplicate": 1,
            "rejected": 1,
            "results": [
                {"index": 0, "detection_id": "s-0042-000913", "status": "accepted"},
                {"index": 1, "detection_id": "s-0042-000912", "status": "duplicate"},
                {
                    "index": 2,
                    "detection_id": "s-0042-000915",
                    "status": "rejected",
                    "errors": [
                        {
                            "field": "detections[2].arrival_time",
                            "reason": "is 12.000 s in the future (tolerance 2 s): check the "
                            "sensor's GPS clock",
                        }
                    ],
                },
            ],
        },
    ),
    401: _example(
        "No token, a malformed one, or one that belongs to no sensor",
        {"detail": "unknown token"},
        {"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    403: _example(
        "The sensor is revoked, or an item names another sensor",
        {"detail": "sensor s-0042 is revoked"},
    ),
    413: _example("Body over 1 MiB", {"detail": "body larger than 1048576 bytes"}),
    422: _example(
        "Malformed body or no item accepted; each error names its field",
        {
            "accepted": 0,
            "duplicate": 0,
            "rejected": 1,
            "detail": "no detection in this request was accepted",
            "results": [
                {
                    "index": 0,
                    "detection_id": "s-0042-000913",
                    "status": "rejected",
                    "errors": [
                        {
                            "field": "detections[0].arrival_time",
                            "reason": "Input should be a valid datetime",
                        }
                    ],
                }
            ],
        },
    ),
    429: _example(
        "Too many requests from this sensor",
        {"detail": "too many requests from sensor s-0042"},
        _RETRY_AFTER,
    ),
    503: _example(
        "Kafka did not acknowledge in time: nothing in the request was accepted",
        {
            "detail": "the detection log (Kafka) is unavailable; nothing from this request was "
            "accepted, resend it after Retry-After"
        },
        _RETRY_AFTER,
    ),
}
