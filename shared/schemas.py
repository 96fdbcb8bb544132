"""Every message that crosses a process boundary, defined once.

This module owns the wire format of Shotline:

* the HTTP body a sensor posts to ingest (:class:`DetectionBatch` of :class:`DetectionIn`);
* the record ingest writes to the ``detections`` topic (:class:`DetectionRecord`);
* the record the locator writes to the ``incidents`` topic (:class:`IncidentRecord`).

Every topic record carries ``schema_version``. A consumer that meets a version it does not
know treats the message as poison (dead letter), never guesses. Times on the wire are
RFC 3339 in UTC with exactly six fractional digits, so a microsecond posted by a sensor
arrives on the topic unchanged (see :func:`format_time`).

``python -m shared.schemas`` writes the JSON Schema of each topic record to stdout.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

DETECTION_SCHEMA_VERSION = 1
INCIDENT_SCHEMA_VERSION = 1

#: Identifiers that travel in URLs, Kafka keys and log lines: no spaces, no slashes.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_ID_RE = re.compile(ID_PATTERN)


_ZERO = timedelta(0)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits and a ``Z``: lossless for microseconds."""
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime on the hot ingest path
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


#: RFC 3339 ``date-time`` (section 5.6): a full date, ``T``, a full time with optional
#: fraction, and a ``Z`` or numeric offset. No space for the ``T``, no missing offset.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)
_TIME_EXAMPLE = "e.g. 2026-11-25T01:02:03.123456Z"


def _parse_wire_time(value: object) -> object:
    """An RFC 3339 date-time string parsed to an aware datetime; a datetime passes through.

    Strict on purpose: a Unix number, a boolean, a space for the ``T`` or a missing offset is
    an error, not a guess, and so is a fraction finer than a microsecond that is not zero
    (keeping it would need nanoseconds, cutting it would change the sensor's reading).

    Shotline's own wire form (what :func:`format_time` writes, 27 characters ending in ``Z``)
    takes a fast path straight to a datetime in ``datetime.UTC``: pydantic's own parser
    costs a fifth of decoding a detection record, the locator's hottest step after physics.
    """
    if type(value) is str:
        if len(value) == 27 and value[26] == "Z" and value[10] == "T" and value[19] == ".":
            try:
                return datetime.fromisoformat(value)  # ends in Z: tzinfo is datetime.UTC
            except ValueError:
                pass  # the slow path below says what is wrong
        match = _RFC3339.match(value)
        if match is None:
            raise ValueError(f"must be an RFC 3339 date-time with a UTC offset, {_TIME_EXAMPLE}")
        day, clock, fraction, offset = match.groups()
        fraction = fraction or ""
        if fraction[6:].strip("0"):
            raise ValueError(
                f"has {len(fraction)} fractional digits: Shotline keeps microseconds exactly "
                "(6 digits) and will not cut finer ones silently"
            )
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            return datetime.fromisoformat(f"{day}T{clock}.{fraction[:6]:0<6}{offset}")
        except ValueError as exc:
            raise ValueError(f"is not a valid date-time ({exc}), {_TIME_EXAMPLE}") from None
    if isinstance(value, datetime):
        return value
    raise ValueError(f"must be an RFC 3339 date-time string, {_TIME_EXAMPLE}")


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value  # already normalised (every instant the services compute)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (RFC 3339), e.g. 2026-11-25T01:02:03.123456Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 or 9999-12-31T23:59:59-01:00: no year 0 or 10000 exists
        raise ValueError("is outside years 1 to 9999 once converted to UTC") from None


#: A timezone-aware instant, normalised to UTC, serialised with microseconds kept exactly.
UtcTime = Annotated[
    datetime,
    BeforeValidator(_parse_wire_time),
    AfterValidator(_require_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]

def _is_false(value: object) -> bool:
    return value is False


_EXERCISE = {"exercise": True}

Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=128)]


class WireModel(BaseModel):
    """Base of every wire model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(WireModel):
    """A WGS84 position."""

    lat: float = Field(strict=True, ge=-90, le=90, description="Latitude, degrees north")
    lon: float = Field(strict=True, ge=-180, le=180, description="Longitude, degrees east")
    alt_m: float = Field(
        default=0.0,
        strict=True,
        ge=-500,
        le=9000,
        description="Height above the WGS84 ellipsoid, metres",
    )


class AcousticFeatures(WireModel):
    """Optional acoustic features of one impulse, as measured at the sensor.

    The definitions are the contract between a sensor and the scorer; ``shotline sensor``
    computes exactly these (services/sensor/features.py, docs/sensor.md). "High-passed" is a
    one-pole high-pass at 300 Hz; the "first peak" is the first excursion after the onset
    reaching 35 % of the largest one within 2 ms of the trigger.
    """

    peak_db: float | None = Field(
        default=None, strict=True, ge=0, le=250,
        description="Largest |sample| from the onset to 5 ms after it, in dB SPL by the "
        "sensor's calibration (the SPL of a full-scale sample); a clipped impulse reads full "
        "scale, a lower bound",
    )
    snr_db: float | None = Field(
        default=None, strict=True, ge=-50, le=200,
        description="20·log10 of the high-passed peak (onset to 5 ms after) over the RMS of the "
        "high-passed background before the impulse (loud events excluded), dB",
    )
    rise_time_ms: float | None = Field(
        default=None, strict=True, ge=0, le=1000,
        description="10 % to 90 % rise of the first peak's magnitude on the high-passed signal, "
        "crossings interpolated between samples, ms",
    )
    duration_ms: float | None = Field(
        default=None, strict=True, ge=0, le=10000,
        description="Length of the first pulse (a muzzle blast's N-wave): from the onset to the "
        "second zero crossing of the high-passed signal after the first peak, ms. Not the "
        "energy envelope (a street's reverberation lasts tens to hundreds of ms)",
    )
    spectral_centroid_hz: float | None = Field(
        default=None, strict=True, ge=0, le=100000,
        description="Power-weighted mean frequency of the raw audio from 1 ms before to 9 ms "
        "after the onset, mean removed, Hann-weighted, 0 to Nyquist, Hz",
    )


class DetectionIn(AcousticFeatures):
    """One impulse heard by one sensor, as the sensor posts it."""

    detection_id: Identifier = Field(
        description="Unique per sensor; the idempotency key. Derive it from the sensor and "
        "the onset (shotline sensor: 'on-' + 20 hex of SHA-256 of 'sensor_id|arrival_time'), "
        "so a resend is answered duplicate"
    )
    sensor_id: Identifier = Field(description="Must be the authenticated sensor's own id")
    arrival_time: UtcTime = Field(
        description="Onset time, RFC 3339 UTC; microseconds are kept exactly"
    )
    position: Position | None = Field(
        default=None, description="The sensor's own GPS fix, if it reports one"
    )
    temperature_c: float | None = Field(
        default=None, strict=True, ge=-60, le=70, description="Air temperature at the sensor, °C"
    )
    exercise: bool = Field(
        default=False,
        description="A drill's pulse (`shotline drill`), never a real one: every incident "
        "built from it is an exercise, and every alert of it says so",
    )

    def features(self) -> AcousticFeatures:
        return AcousticFeatures(
            peak_db=self.peak_db,
            snr_db=self.snr_db,
            rise_time_ms=self.rise_time_ms,
            duration_ms=self.duration_ms,
            spectral_centroid_hz=self.spectral_centroid_hz,
        )


class DetectionBatch(WireModel):
    """The body of ``POST /v1/detections``."""

    detections: list[dict] = Field(
        min_length=1,
        max_length=1000,
        description="1 to 1,000 detections; each is validated on its own (per-item results)",
    )


class DetectionRecord(WireModel):
    """What ingest writes to the ``detections`` topic, keyed by ``zone``.

    ``position`` is where the sensor was when it heard the pulse: its own fix if it
    reported one, else its surveyed position from the registry.
    """

    schema_version: Literal[1] = DETECTION_SCHEMA_VERSION
    detection_id: Identifier
    sensor_id: Identifier
    zone: Identifier
    arrival_time: UtcTime
    position: Position
    features: AcousticFeatures = AcousticFeatures()
    temperature_c: float | None = None
    received_at: UtcTime = Field(description="When ingest accepted it (for the latency SLO)")
    #: Written only when true, so a real detection's record is byte for byte what it was before
    #: the field existed (an older locator, which forbids unknown fields, still reads it).
    exercise: bool = Field(
        default=False, exclude_if=_is_false, description="A drill's pulse (see DetectionIn)"
    )

    @property
    def key(self) -> tuple[str, str]:
        """Identity across retries and replays: (sensor_id, detection_id)."""
        return (self.sensor_id, self.detection_id)


def encode_detection_record(
    detection: DetectionIn, *, zone: str, position: dict[str, float], received_at: str
) -> bytes:
    """The bytes of ``encode(DetectionRecord(...))`` for an already validated detection.

    Ingest's hot path: building and dumping a :class:`DetectionRecord` costs about four
    times as much as the Kafka send it precedes. ``position`` is ``Position.model_dump()``
    of the position to record, used only when the detection carries none of its own;
    ``received_at`` is ``format_time(now)``. The output is byte-identical to the model's
    (a property test holds the two together), so consumers decode it as a
    :class:`DetectionRecord` like any other.
    """
    own = detection.position
    return orjson.dumps(
        {
            "schema_version": DETECTION_SCHEMA_VERSION,
            "detection_id": detection.detection_id,
            "sensor_id": detection.sensor_id,
            "zone": zone,
            "arrival_time": format_time(detection.arrival_time),
            "position": position if own is None else own.model_dump(),
            "features": {
                "peak_db": detection.peak_db,
                "snr_db": detection.snr_db,
                "rise_time_ms": detection.rise_time_ms,
                "duration_ms": detection.duration_ms,
                "spectral_centroid_hz": detection.spectral_centroid_hz,
            },
            "temperature_c": detection.temperature_c,
            "received_at": received_at,
            **(_EXERCISE if detection.exercise else {}),
        }
    )


IncidentClass = Literal["gunfire", "probable_gunfire", "fireworks", "other"]
IncidentEvent = Literal["created", "updated", "cancelled"]


class IncidentLocation(Position):
    """Where the shots came from, with an honest 95 % horizontal error radius."""

    radius95_m: float = Field(ge=0, description="95 % horizontal error radius, metres")
    semi_major_m: float | None = Field(default=None, ge=0, description="95 % ellipse, metres")
    semi_minor_m: float | None = Field(default=None, ge=0, description="95 % ellipse, metres")
    orientation_deg: float | None = Field(
        default=None, description="Ellipse major axis, degrees clockwise from north"
    )


class Round(WireModel):
    """One located round of an incident."""

    shot_time: UtcTime
    lat: float
    lon: float
    radius95_m: float
    detection_keys: list[str] = Field(description="'sensor_id/detection_id' of each pulse used")


class IncidentReview(WireModel):
    """A person's decision on an incident (or the review deadline passing without one)."""

    status: Literal["confirmed", "reclassified", "rejected", "unreviewed"]
    reviewed_by: str = Field(min_length=1, max_length=200)
    reason: str = Field(max_length=2000)
    decided_at: UtcTime
    late: bool = Field(default=False, description="Decided after the review deadline")
    queued_at: UtcTime
    deadline_at: UtcTime


class IncidentRecord(WireModel):
    """What the locator writes to the ``incidents`` topic, keyed by ``incident_id``.

    ``incident_id`` is deterministic (zone + the first round's detections) and ``version``
    counts updates from 1, so re-processing after a crash yields the same (id, version) and a
    consumer drops the duplicate.
    """

    schema_version: Literal[1] = INCIDENT_SCHEMA_VERSION
    incident_id: Identifier
    version: int = Field(ge=1)
    event: IncidentEvent
    zone: Identifier
    classification: IncidentClass
    gunfire_probability: float = Field(ge=0, le=1)
    rounds: int = Field(ge=1)
    shot_time: UtcTime = Field(description="Emission time of the first round")
    last_shot_time: UtcTime = Field(description="Emission time of the latest round")
    location: IncidentLocation
    sensor_count: int = Field(ge=0, description="Distinct sensors that contributed")
    sensors_used: list[str] = Field(default_factory=list)
    sensors_rejected: list[str] = Field(default_factory=list)
    residual_rms_s: float | None = Field(default=None, ge=0)
    round_details: list[Round] = Field(default_factory=list)
    first_detection_received_at: UtcTime = Field(
        description="When the earliest contributing detection reached ingest"
    )
    published_at: UtcTime = Field(description="When the locator produced this version")
    exercise: bool = Field(
        default=False,
        exclude_if=_is_false,
        description="Built from a drill's pulses only (the locator never associates a drill's "
        "pulse with a real one): every alert of it is marked an exercise (CAP status "
        "Exercise). Written only when true; an older dispatch, which does not know the field, "
        "dead-letters such a record rather than deliver it as real",
    )
    review: IncidentReview | None = Field(
        default=None, description="Set on versions written by dispatch's human review"
    )


def is_identifier(value: str) -> bool:
    return bool(_ID_RE.match(value))


def detection_key(sensor_id: str, detection_id: str) -> str:
    return f"{sensor_id}/{detection_id}"


def topic_json_schemas() -> dict[str, dict]:
    """JSON Schema of each topic record, for outsiders (AsyncAPI-style documentation)."""
    return {
        "detections": DetectionRecord.model_json_schema(mode="serialization"),
        "incidents": IncidentRecord.model_json_schema(mode="serialization"),
    }


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(topic_json_schemas(), indent=2))
