"""OpenAPI material for ingest: the request schema and an example for every request and error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from services.ingest.validation import Status
from shared.schemas import DetectionIn


class DetectionBatch(BaseModel):
    """The body of ``POST /v1/detections`` as documented (each item is validated on its own,
    with :class:`DetectionIn`, so one bad item does not sink the batch)."""

    model_config = ConfigDict(extra="forbid")

    detections: list[DetectionIn] = Field(min_length=1, max_length=1000)


class FieldErrorOut(BaseModel):
    field: str = Field(description="Path of the input at fault, e.g. detections[2].arrival_time")
    reason: str


class ItemResultOut(BaseModel):
    index: int = Field(ge=0, description="Position of the item in `detections`")
    detection_id: str | None
    status: Status
    errors: list[FieldErrorOut] = Field(
        default_factory=list, description="Only for `rejected`: what to fix"
    )


class BatchReply(BaseModel):
    """Per-item report of a batch (202, and 422/503 when nothing was accepted)."""

    accepted: int = Field(ge=0)
    duplicate: int = Field(ge=0)
    conflict: int = Field(ge=0)
    rejected: int = Field(ge=0)
    unknown: int = Field(ge=0)
    unavailable: int = Field(ge=0)
    results: list[ItemResultOut]
    detail: str | None = Field(default=None, description="Set when nothing was accepted")


class ErrorReply(BaseModel):
    """An answer about the request as a whole."""

    detail: str
    errors: list[FieldErrorOut] = Field(default_factory=list)


def _components() -> dict[str, Any]:
    _, top = models_json_schema(
        [
            (DetectionBatch, "validation"),
            (BatchReply, "serialization"),
            (ErrorReply, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    return top["$defs"]  # type: ignore[no-any-return]


#: Every schema the document refers to, for ``components.schemas``.
COMPONENTS: dict[str, Any] = _components()
SECURITY_SCHEMES: dict[str, Any] = {
    "sensorToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The sensor's own token (`shotline sensors add` shows it once)",
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


REQUEST_SCHEMA = _ref("DetectionBatch")

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


def _example(
    description: str,
    value: Any,
    headers: dict[str, Any] | None = None,
    schemas: tuple[str, ...] = ("ErrorReply",),
) -> dict[str, Any]:
    schema = _ref(schemas[0]) if len(schemas) == 1 else {"anyOf": [_ref(n) for n in schemas]}
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": value}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
_COUNTS = {"conflict": 0, "unknown": 0, "unavailable": 0}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: _example(
        "At least one item is accepted (Kafka acknowledged it) or a duplicate; read each "
        "item's status",
        {
            "accepted": 1,
            "duplicate": 1,
            "rejected": 1,
            **_COUNTS,
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
        schemas=("BatchReply",),
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
    415: _example(
        "The body is not declared application/json",
        {
            "detail": "the body must be JSON: send Content-Type: application/json",
            "errors": [{"field": "Content-Type", "reason": "must be application/json"}],
        },
    ),
    422: _example(
        "Malformed body, or no item accepted (then with the per-item report); each error "
        "names its field",
        {
            "accepted": 0,
            "duplicate": 0,
            "rejected": 1,
            **_COUNTS,
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
        schemas=("BatchReply", "ErrorReply"),
    ),
    429: _example(
        "Too many requests from this sensor",
        {"detail": "too many requests from sensor s-0042"},
        _RETRY_AFTER,
    ),
    503: _example(
        "Nothing in the request is known to be stored: Kafka did not acknowledge in time "
        "(items `unknown` may yet be stored, items `unavailable` are not: resend both, a "
        "stored one is then `duplicate`), or the sensor registry (PostgreSQL) is down "
        "(nothing accepted)",
        {
            "accepted": 0,
            "duplicate": 0,
            "rejected": 0,
            "conflict": 0,
            "unknown": 1,
            "unavailable": 0,
            "detail": "the detection log (Kafka) did not acknowledge in time; items marked "
            "`unknown` may yet be stored, items marked `unavailable` are not: resend both "
            "after Retry-After (a stored one is then answered `duplicate`)",
            "results": [{"index": 0, "detection_id": "s-0042-000913", "status": "unknown"}],
        },
        _RETRY_AFTER,
        schemas=("BatchReply", "ErrorReply"),
    ),
}
