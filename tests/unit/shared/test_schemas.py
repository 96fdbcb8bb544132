"""The wire format: microsecond-exact UTC times, strict fields, versioned records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from shared.schemas import DetectionRecord, Position, format_time, topic_json_schemas


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
    "overrides",
    [
        {"schema_version": 2},  # a version this code does not know is refused, not guessed
        {"arrival_time": "2026-11-25T01:02:03"},  # naive time
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
