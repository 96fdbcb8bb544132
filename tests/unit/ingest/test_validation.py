"""Pure ingest decisions: item parsing, the time window, duplicates and the rate limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.auth import VerifiedTokens, bearer_token, hash_token, issue_token, verify
from services.ingest.validation import (
    FieldError,
    RecentDetections,
    TokenBucket,
    check_time_window,
    content_digest,
    parse_item,
)
from shared.schemas import DetectionIn

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
TOL = timedelta(seconds=2)
MAX_AGE = timedelta(seconds=300)


def item(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "detection_id": "d1",
        "sensor_id": "s1",
        "arrival_time": "2026-11-25T12:00:00.000001Z",
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"arrival_time": "2026-11-25T12:00:00"}, "detections[4].arrival_time"),  # no offset
        ({"arrival_time": "noon"}, "detections[4].arrival_time"),  # not a time
        ({"detection_id": "has space"}, "detections[4].detection_id"),  # not an identifier
        ({"detection_id": ""}, "detections[4].detection_id"),  # empty
        ({"position": {"lat": 0, "lon": 181}}, "detections[4].position.lon"),  # off the globe
        ({"peak_db": -1}, "detections[4].peak_db"),  # negative level
        ({"temperature_c": 99}, "detections[4].temperature_c"),  # not air
        ({"colour": "red"}, "detections[4].colour"),  # unknown field: a typo must not vanish
        # strict: nothing is coerced into what the sensor did not say
        ({"position": {"lat": True, "lon": 0}}, "detections[4].position.lat"),  # bool is no number
        ({"peak_db": "120"}, "detections[4].peak_db"),  # a string is no number
        ({"arrival_time": 1764032523}, "detections[4].arrival_time"),  # Unix seconds
        ({"arrival_time": 1764032523.5}, "detections[4].arrival_time"),
        ({"arrival_time": True}, "detections[4].arrival_time"),
        ({"arrival_time": "2026-11-25 12:00:00Z"}, "detections[4].arrival_time"),  # space for T
        ({"arrival_time": "2026-11-25"}, "detections[4].arrival_time"),  # a date only
        # a nanosecond cannot be kept, so it is refused rather than cut
        ({"arrival_time": "2026-11-25T12:00:00.123456789Z"}, "detections[4].arrival_time"),
        # years 1 and 9999 with an offset leave the calendar once converted to UTC
        ({"arrival_time": "0001-01-01T00:00:00+01:00"}, "detections[4].arrival_time"),
        ({"arrival_time": "9999-12-31T23:59:59-01:00"}, "detections[4].arrival_time"),
        ({"arrival_time": "2026-02-30T12:00:00Z"}, "detections[4].arrival_time"),  # no such day
    ],
)
def test_each_malformed_field_is_named(fields: dict[str, object], bad_field: str) -> None:
    result = parse_item(item(**fields), 4)
    assert isinstance(result, tuple)
    assert bad_field in [e.field for e in result]


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        # RFC 3339 forms that name one microsecond exactly are all read alike
        ("2026-11-25T12:00:00.123456Z", datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25t12:00:00.123456z", datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T12:00:00.1Z", datetime(2026, 11, 25, 12, 0, 0, 100000, tzinfo=UTC)),
        ("2026-11-25T12:00:00Z", datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)),
        # trailing zeros past the microsecond lose nothing
        ("2026-11-25T12:00:00.123456000Z", datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T14:00:00.5+02:00", datetime(2026, 11, 25, 12, 0, 0, 500000, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_exactly(text: str, instant: datetime) -> None:
    parsed = parse_item(item(arrival_time=text), 0)
    assert isinstance(parsed, DetectionIn)
    assert parsed.arrival_time == instant and parsed.arrival_time.tzinfo is UTC


def test_a_non_object_item_is_rejected_as_a_whole() -> None:
    assert parse_item(["x"], 0) == (FieldError("detections[0]", "must be an object"),)


def test_offsets_are_normalised_to_utc_keeping_microseconds() -> None:
    parsed = parse_item(item(arrival_time="2026-11-25T13:00:00.123456+01:00"), 0)
    assert isinstance(parsed, DetectionIn)
    assert parsed.arrival_time == datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset_s", "accepted"),
    [
        (0.0, True),  # now
        (2.0, True),  # exactly at the clock tolerance
        (2.000001, False),  # a microsecond beyond: the sensor's clock is ahead
        (-300.0, True),  # exactly the maximum age
        (-300.000001, False),  # older than the maximum age
    ],
)
def test_time_window(offset_s: float, accepted: bool) -> None:
    detection = DetectionIn.model_validate(item(arrival_time=NOW + timedelta(seconds=offset_s)))
    error = check_time_window(detection, 0, now=NOW, clock_tolerance=TOL, max_age=MAX_AGE)
    assert (error is None) is accepted


def test_recent_detections_forget_beyond_horizon_and_capacity() -> None:
    recent = RecentDetections(horizon=timedelta(seconds=10), capacity=2)
    recent.remember(("s", "a"), NOW)
    recent.remember(("s", "b"), NOW + timedelta(seconds=1))
    assert ("s", "a") in recent
    recent.remember(("s", "c"), NOW + timedelta(seconds=2))  # over capacity: oldest goes
    assert ("s", "a") not in recent and ("s", "b") in recent
    recent.expire(NOW + timedelta(seconds=11.5))  # b is past the horizon, c is not
    assert ("s", "b") not in recent and ("s", "c") in recent


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        # burst of 2 at rate 1/s: two immediate requests pass, the third waits 1 s
        ([0.0, 0.0, 0.0], [None, None, 1.0]),
        # after 0.5 s half a token is back: wait 0.5 s more
        ([0.0, 0.0, 0.5], [None, None, 0.5]),
        # after a full second one token is back
        ([0.0, 0.0, 1.0], [None, None, None]),
    ],
)
def test_token_bucket(times: list[float], expected: list[float | None]) -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=2)
    got = [bucket.take("s1", t) for t in times]
    assert got == [None if e is None else pytest.approx(e) for e in expected]


def test_tokens_are_random_and_only_their_hash_verifies() -> None:
    token, stored = issue_token()
    other, _ = issue_token()
    assert token != other and token.startswith("shl_")
    assert stored == hash_token(token) and verify(token, stored) and not verify(other, stored)
    assert bearer_token(f"Bearer {token}") == token
    assert bearer_token(f"Basic {token}") is None
    assert bearer_token("Bearer short") is None
    assert bearer_token(None) is None


def test_recent_detections_keep_the_content_digest_for_conflicts() -> None:
    recent = RecentDetections(horizon=timedelta(seconds=10), capacity=10)
    first = parse_item(item(peak_db=120.0), 0)
    same = parse_item(item(peak_db=120, arrival_time="2026-11-25T13:00:00.000001+01:00"), 0)
    other = parse_item(item(peak_db=99.0), 0)
    assert isinstance(first, DetectionIn) and isinstance(same, DetectionIn)
    assert isinstance(other, DetectionIn)
    recent.remember(("s1", "d1"), NOW, content_digest(first))
    assert recent.digest(("s1", "d1")) == content_digest(same)  # same content, spelled otherwise
    assert recent.digest(("s1", "d1")) != content_digest(other)  # a reused id: conflict
    assert recent.digest(("s1", "d2")) is None


@pytest.mark.parametrize(
    ("confirmed_at", "asked_at", "served"),
    [
        (0.0, 0.0, True),  # just confirmed
        (0.0, 30.0, True),  # exactly at the bound
        (0.0, 30.001, False),  # past it: a revocation before the outage now counts
        (None, 1.0, False),  # never confirmed: cannot be judged without the database
    ],
)
def test_verified_tokens_serve_only_within_their_bound(
    confirmed_at: float | None, asked_at: float, served: bool
) -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(max_age_s=30.0, capacity=10)
    if confirmed_at is not None:
        tokens.confirmed(b"hash", "s1", confirmed_at)
    assert (tokens.get(b"hash", asked_at) == "s1") is served


def test_verified_tokens_are_bounded_and_forgotten() -> None:
    tokens: VerifiedTokens[str] = VerifiedTokens(max_age_s=30.0, capacity=2)
    for n, name in enumerate((b"a", b"b", b"c")):
        tokens.confirmed(name, name.decode(), float(n))
    assert len(tokens) == 2 and tokens.get(b"a", 3.0) is None  # least recently confirmed out
    tokens.forget(b"b")  # the database said the token is unknown now
    assert tokens.get(b"b", 3.0) is None and tokens.get(b"c", 3.0) == "c"
