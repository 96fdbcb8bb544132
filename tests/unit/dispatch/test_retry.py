"""Retry decisions after a delivery attempt: a table of (attempt, outcome) -> decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.push import retry_policy
from services.dispatch.retry import (
    CircuitOpen,
    Decision,
    Delivered,
    Disable,
    GiveUp,
    HttpResponse,
    NetworkError,
    Refused,
    Retry,
    RetryPolicy,
    Timeout,
    decide,
    parse_retry_after,
)

T0 = datetime(2026, 11, 25, 1, 0, 0, tzinfo=UTC)  # first attempt started
NOW = T0 + timedelta(seconds=3)  # this attempt finished
POLICY = RetryPolicy()


def mid() -> float:
    """Jitter at the middle of its range: delays exactly as scheduled."""
    return 0.5


def at(seconds: float) -> Retry:
    return Retry(NOW + timedelta(seconds=seconds))


def http(status: int, **headers: str) -> HttpResponse:
    return HttpResponse(status, {k.replace("_", "-"): v for k, v in headers.items()})


def same(decision: Decision, expected: Decision) -> bool:
    """Compare ignoring the free-text reason of Retry/GiveUp/Disable."""
    if type(decision) is not type(expected):
        return False
    if isinstance(expected, Retry):
        assert isinstance(decision, Retry)
        return decision.at == expected.at
    if isinstance(expected, GiveUp):
        assert isinstance(decision, GiveUp)
        return decision.exhausted == expected.exhausted
    return True


LAST = POLICY.max_attempts  # 13


@pytest.mark.parametrize(
    ("attempt", "outcome", "expected"),
    [
        # 2xx: done
        (1, http(200), Delivered()),
        (3, http(204), Delivered()),
        # first failure retries after ~1 s, then 2 s, 5 s, 10 s, 30 s, 1 min ...
        (1, http(500), at(1)),
        (2, http(502), at(2)),
        (3, http(503), at(5)),
        (4, NetworkError("connection refused"), at(10)),
        (5, Timeout("read timeout"), at(30)),
        (6, http(504), at(60)),
        # ... up to hours
        (12, http(500), at(14400)),
        # 408 Request Timeout and 429 Too Many Requests are transient
        (1, http(408), at(1)),
        (1, http(429), at(1)),
        # Retry-After in seconds is honoured when longer than the schedule
        (1, http(429, retry_after="120"), at(120)),
        # ... but never makes us retry earlier than the schedule
        (5, http(503, retry_after="1"), at(30)),
        # Retry-After as an HTTP-date (RFC 9110 IMF-fixdate), 10 minutes ahead
        (1, http(503, retry_after="Wed, 25 Nov 2026 01:10:03 GMT"), at(600)),
        # an HTTP-date in the past means "now": the schedule decides
        (1, http(503, retry_after="Wed, 25 Nov 2026 00:00:00 GMT"), at(1)),
        # unparseable Retry-After is ignored
        (1, http(429, retry_after="soon"), at(1)),
        # a receiver asking for a day is capped at retry_after_cap_s (1 h)
        (1, http(429, retry_after="86400"), at(3600)),
        # Retry-After on a 2xx means nothing
        (1, http(202, retry_after="60"), Delivered()),
        # other 4xx: refused for good, at once (not dead-lettered)
        (1, http(400), GiveUp("", exhausted=False)),
        (1, http(401), GiveUp("", exhausted=False)),
        (1, http(403), GiveUp("", exhausted=False)),
        (1, http(404), GiveUp("", exhausted=False)),
        (1, http(422), GiveUp("", exhausted=False)),
        # a redirect is not followed; the receiver must be re-registered
        (1, http(301), GiveUp("", exhausted=False)),
        # 410 Gone disables the subscription
        (1, http(410), Disable("")),
        (7, http(410), Disable("")),
        # the last attempt failing transiently: dead letter
        (LAST, http(500), GiveUp("", exhausted=True)),
        (LAST, NetworkError("reset"), GiveUp("", exhausted=True)),
        # the last attempt refused: still a plain give-up
        (LAST, http(400), GiveUp("", exhausted=False)),
        # a target address dispatch may not send to: failed at once, never retried (the
        # operator fixes the subscription or the allowed networks, then replays)
        (1, Refused("127.0.0.1 is a loopback address"), GiveUp("", exhausted=False)),
        (LAST, Refused("10.0.0.5 is a private address"), GiveUp("", exhausted=False)),
        # circuit open spends no attempt: retry when the breaker lets a probe through
        (3, CircuitOpen(until=NOW + timedelta(seconds=25)), at(25)),
        # circuit open with an unknown re-open time: like a first failure
        (3, CircuitOpen(), at(1)),
        # a breaker that re-opened in the past: right away
        (3, CircuitOpen(until=NOW - timedelta(seconds=5)), at(0)),
    ],
)
def test_decide_table(attempt: int, outcome: object, expected: Decision) -> None:
    decision = decide(
        attempt,
        outcome,
        now=NOW,
        first_attempt_at=T0,
        policy=POLICY,
        jitter=mid,  # type: ignore[arg-type]
    )
    assert same(decision, expected), decision


@pytest.mark.parametrize(
    ("jitter", "delay_s"),
    [
        # lowest jitter: 20 % earlier
        (0.0, 8.0),
        # middle: as scheduled
        (0.5, 10.0),
        # highest: 20 % later
        (1.0, 12.0),
    ],
)
def test_jitter_spreads_delays_by_the_ratio(jitter: float, delay_s: float) -> None:
    decision = decide(
        4, http(500), now=NOW, first_attempt_at=T0, policy=POLICY, jitter=lambda: jitter
    )
    assert decision == Retry(NOW + timedelta(seconds=delay_s), "HTTP 500")


def test_jitter_out_of_range_is_a_bug() -> None:
    with pytest.raises(ValueError, match="jitter"):
        decide(1, http(500), now=NOW, first_attempt_at=T0, policy=POLICY, jitter=lambda: 2.0)


def test_age_limit_dead_letters_even_with_attempts_left() -> None:
    policy = RetryPolicy(max_age=timedelta(minutes=10))
    late = T0 + timedelta(minutes=9, seconds=50)
    # attempt 4 would wait 10 s -> 10 min 0 s: still allowed (not past the limit)
    assert isinstance(
        decide(4, http(500), now=late, first_attempt_at=T0, policy=policy, jitter=mid), Retry
    )
    # attempt 5 would wait 30 s: past the limit
    decision = decide(5, http(500), now=late, first_attempt_at=T0, policy=policy, jitter=mid)
    assert decision == GiveUp(decision.reason, exhausted=True)  # type: ignore[union-attr]
    # Retry-After pushing past the limit too
    decision = decide(
        1, http(429, retry_after="900"), now=late, first_attempt_at=T0, policy=policy, jitter=mid
    )
    assert isinstance(decision, GiveUp) and decision.exhausted


def test_configurable_schedule() -> None:
    policy = RetryPolicy(schedule_s=(0.5, 7), jitter_ratio=0.0)
    assert policy.max_attempts == 3
    assert decide(2, http(500), now=NOW, first_attempt_at=T0, policy=policy, jitter=mid) == Retry(
        NOW + timedelta(seconds=7), "HTTP 500"
    )
    assert isinstance(
        decide(3, http(500), now=NOW, first_attempt_at=T0, policy=policy, jitter=mid), GiveUp
    )


def test_push_policies() -> None:
    webpush = retry_policy("webpush", POLICY)
    fcm = retry_policy("fcm", POLICY)
    kw = {"now": NOW, "first_attempt_at": T0, "jitter": mid}
    # push services answer 404 for an expired registration: disable
    assert isinstance(decide(1, http(404), policy=webpush, **kw), Disable)  # type: ignore[arg-type]
    assert isinstance(decide(1, http(404), policy=fcm, **kw), Disable)  # type: ignore[arg-type]
    # FCM 401: our access token expired -> retry with a fresh one
    assert isinstance(decide(1, http(401), policy=fcm, **kw), Retry)  # type: ignore[arg-type]
    # Web Push 401: our VAPID signature was refused -> no point retrying
    assert isinstance(decide(1, http(401), policy=webpush, **kw), GiveUp)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        # delta-seconds
        ("0", 0.0),
        ("42", 42.0),
        (" 7 ", 7.0),
        # IMF-fixdate, 1 minute after NOW
        ("Wed, 25 Nov 2026 01:01:03 GMT", 60.0),
        # obsolete RFC 850 format is still an HTTP-date
        ("Wednesday, 25-Nov-26 01:01:03 GMT", 60.0),
        # in the past: 0
        ("Tue, 24 Nov 2026 01:00:00 GMT", 0.0),
        # garbage and negatives: ignored
        ("tomorrow", None),
        ("-5", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule_s": (1, -1)},
        {"jitter_ratio": 1.0},
        {"max_age": timedelta(0)},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError):
        decide(0, http(500), now=NOW, first_attempt_at=T0, policy=POLICY, jitter=mid)
