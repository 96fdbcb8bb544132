"""The wire format: microsecond-exact UTC times, strict fields, versioned records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.kafka import encode
from shared.schemas import (
    AcousticFeatures,
    DetectionIn,
    DetectionRecord,
    Position,
    encode_detection_record,
    format_time,
    topic_json_schemas,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC), "2026-11-25T01:02:03.000000Z"),
        (datetime(2026, 11, 25, 1, 2, 3, 1, tzinfo=UTC), "2026-11-25T01:02:03.000001Z"),
        # another offset is converted to UTC
        (
            datetime(2026, 11, 25, 3, 2, 3, 999999, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-25T01:02:03.999999Z",
        ),
    ],
)
def test_times_are_written_utc_with_six_digits(value: datetime, text: str) -> None:
    assert format_time(value) == text


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "detection_id": "d1",
        "sensor_id": "s1",
        "zone": "z",
        "arrival_time": "2026-11-25T01:02:03.123456Z",
        "position": Position(lat=40.0, lon=-80.0).model_dump(),
        "received_at": "2026-11-25T01:02:03.200000Z",
    }
    base.update(overrides)
    return base


def test_record_round_trips_through_json_exactly() -> None:
    original = DetectionRecord.model_validate(record())
    again = DetectionRecord.model_validate_json(original.model_dump_json())
    assert again == original
    assert again.arrival_time.microsecond == 123456


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        # the form Shotline writes (parsed on a fast path of its own)
        ("2026-11-25T01:02:03.123456Z", datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)),
        # other RFC 3339 forms go through pydantic's parser, then to UTC
        ("2026-11-25T01:02:03Z", datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)),
        ("2026-11-25T01:02:03.123456+00:00", datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)),
        ("2026-11-25T03:02:03.123456+02:00", datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)),
    ],
)
def test_times_read_from_the_wire_are_utc_instants(text: str, instant: datetime) -> None:
    raw = DetectionRecord.model_validate(record()).model_dump(mode="json")
    parsed = DetectionRecord.model_validate_json(orjson.dumps({**raw, "arrival_time": text}))
    assert parsed.arrival_time == instant
    assert parsed.arrival_time.tzinfo is UTC


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)))
def test_every_written_time_reads_back_as_the_same_instant(naive: datetime) -> None:
    instant = naive.replace(tzinfo=UTC)
    raw = DetectionRecord.model_validate(record()).model_dump(mode="json")
    parsed = DetectionRecord.model_validate_json(
        orjson.dumps({**raw, "received_at": format_time(instant)})
    )
    assert parsed.received_at == instant
    assert parsed.received_at.tzinfo is UTC


@pytest.mark.parametrize(
    "overrides",
    [
        {"schema_version": 2},  # a version this code does not know is refused, not guessed
        {"arrival_time": "2026-11-25T01:02:03"},  # naive time
        {"arrival_time": "2026-13-25T01:02:03.123456Z"},  # the written form, but no such month
        {"arrival_time": "2026-11-25T01:02:03.123456"},  # naive, six digits
        {"extra": 1},  # unknown field
    ],
)
def test_invalid_records_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DetectionRecord.model_validate(record(**overrides))


def test_topic_schemas_are_published() -> None:
    schemas = topic_json_schemas()
    assert set(schemas) == {"detections", "incidents"}
    assert "arrival_time" in schemas["detections"]["properties"]


_optional_level = st.none() | st.floats(min_value=0, max_value=200, allow_nan=False)
_positions = st.builds(
    Position,
    lat=st.floats(min_value=-90, max_value=90),
    lon=st.floats(min_value=-180, max_value=180),
    alt_m=st.floats(min_value=-500, max_value=9000),
)


@given(
    arrival=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    own_position=st.none() | _positions,
    registry_position=_positions,
    peak_db=_optional_level,
    rise_time_ms=_optional_level,
    temperature_c=st.none() | st.floats(min_value=-60, max_value=70),
    exercise=st.booleans(),
)
def test_ingest_fast_encoding_is_byte_identical_to_the_record_model(
    arrival: datetime,
    own_position: Position | None,
    registry_position: Position,
    peak_db: float | None,
    rise_time_ms: float | None,
    temperature_c: float | None,
    exercise: bool,
) -> None:
    # Ingest skips building DetectionRecord for speed; what it writes must still be exactly
    # what the model would write, or the wire format would have two owners.
    detection = DetectionIn(
        detection_id="d-1",
        sensor_id="s-1",
        arrival_time=arrival,
        position=own_position,
        peak_db=peak_db,
        rise_time_ms=rise_time_ms,
        temperature_c=temperature_c,
        exercise=exercise,
    )
    received = datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=UTC)
    fast = encode_detection_record(
        detection,
        zone="zone-a",
        position=registry_position.model_dump(),
        received_at=format_time(received),
    )
    record = DetectionRecord(
        detection_id="d-1",
        sensor_id="s-1",
        zone="zone-a",
        arrival_time=arrival,
        position=own_position or registry_position,
        features=AcousticFeatures(peak_db=peak_db, rise_time_ms=rise_time_ms),
        temperature_c=temperature_c,
        received_at=received,
        exercise=exercise,
    )
    assert fast == encode(record)
    assert DetectionRecord.model_validate_json(fast) == record


def test_a_real_detection_and_incident_are_written_without_the_exercise_field() -> None:
    """Only a drill's records carry ``exercise`` (true): a real one is byte for byte what an
    older consumer, which forbids unknown fields, already reads."""
    received = datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=UTC)
    real = DetectionRecord(
        detection_id="d-1", sensor_id="s-1", zone="z", arrival_time=received,
        position=Position(lat=40.0, lon=-80.0), received_at=received,
    )
    assert b"exercise" not in encode(real)
    drill = real.model_copy(update={"exercise": True})
    assert orjson.loads(encode(drill))["exercise"] is True
    assert DetectionRecord.model_validate_json(encode(drill)).exercise is True
