"""Circuit breaker per endpoint: a pure state machine driven by (event, time) steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.breaker import BreakerState, CircuitBreaker, is_failure
from services.dispatch.retry import CircuitOpen, HttpResponse, NetworkError, Refused, Timeout

T0 = datetime(2026, 11, 25, 1, 0, 0, tzinfo=UTC)
C, H, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def run(steps: list[tuple[float, str]], threshold: int = 3) -> list[tuple[BreakerState, bool]]:
    """Apply steps (seconds after T0, action) to a fresh breaker (3 failures, 30 s cool-down,
    60 s probe timeout); return (state, allows) after each step."""
    breaker = CircuitBreaker(
        failure_threshold=threshold,
        cooldown=timedelta(seconds=30),
        probe_timeout=timedelta(seconds=60),
    )
    seen = []
    for t, action in steps:
        now = T0 + timedelta(seconds=t)
        if action == "fail":
            breaker.record_failure(now)
        elif action == "ok":
            breaker.record_success(now)
        elif action == "acquire":
            breaker.acquire(now)
        else:
            assert action == "look"
        seen.append((breaker.state(now), breaker.allows(now)))
    return seen


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # closed lets calls through
        ([(0, "look")], [(C, True)]),
        # two failures stay closed, the third opens
        ([(0, "fail"), (1, "fail"), (2, "fail")], [(C, True), (C, True), (OPEN, False)]),
        # a success in between resets the count: failures must be consecutive
        (
            [(0, "fail"), (1, "fail"), (2, "ok"), (3, "fail"), (4, "fail")],
            [(C, True), (C, True), (C, True), (C, True), (C, True)],
        ),
        # open stays open during the cool-down ...
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (29.9, "look")],
            [(C, True), (C, True), (OPEN, False), (OPEN, False)],
        ),
        # ... then half-open lets one probe through
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (30, "look")],
            [(C, True), (C, True), (OPEN, False), (H, True)],
        ),
        # while the probe is in flight, nothing else goes
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (30, "acquire"), (31, "look")],
            [(C, True), (C, True), (OPEN, False), (H, False), (H, False)],
        ),
        # probe succeeds: closed
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (30, "acquire"), (31, "ok")],
            [(C, True), (C, True), (OPEN, False), (H, False), (C, True)],
        ),
        # probe fails: open again for a whole cool-down from the failure
        (
            [
                (0, "fail"),
                (0, "fail"),
                (0, "fail"),
                (30, "acquire"),
                (31, "fail"),
                (60, "look"),
                (61, "look"),
            ],
            [
                (C, True),
                (C, True),
                (OPEN, False),
                (H, False),
                (OPEN, False),
                (OPEN, False),
                (H, True),
            ],
        ),
        # a probe that never reports frees the slot after the probe timeout (60 s)
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (30, "acquire"), (89, "look"), (90, "look")],
            [(C, True), (C, True), (OPEN, False), (H, False), (H, False), (H, True)],
        ),
        # a late failure of a call started before opening does not extend the cool-down
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (20, "fail"), (30, "look")],
            [(C, True), (C, True), (OPEN, False), (OPEN, False), (H, True)],
        ),
        # a late success while open proves the endpoint alive: closed
        (
            [(0, "fail"), (0, "fail"), (0, "fail"), (5, "ok")],
            [(C, True), (C, True), (OPEN, False), (C, True)],
        ),
    ],
)
def test_breaker_state_table(
    steps: list[tuple[float, str]], expected: list[tuple[BreakerState, bool]]
) -> None:
    assert run(steps) == expected


def test_threshold_one_opens_on_first_failure() -> None:
    assert run([(0, "fail")], threshold=1) == [(OPEN, False)]


def test_acquire_reports_whether_to_call_and_reopens_at() -> None:
    b = CircuitBreaker(failure_threshold=1, cooldown=timedelta(seconds=10))
    assert b.acquire(T0) and b.reopens_at() is None
    b.record_failure(T0)
    assert b.reopens_at() == T0 + timedelta(seconds=10)
    assert not b.acquire(T0 + timedelta(seconds=5))
    assert b.acquire(T0 + timedelta(seconds=10))  # the probe
    assert not b.acquire(T0 + timedelta(seconds=10))  # only one


@pytest.mark.parametrize(
    ("outcome", "failure"),
    [
        # no answer at all
        (NetworkError("refused"), True),
        (Timeout("read"), True),
        # server errors and overload
        (HttpResponse(500), True),
        (HttpResponse(503), True),
        (HttpResponse(429), True),
        (HttpResponse(408), True),
        # an answer, even a refusal, proves the endpoint alive
        (HttpResponse(200), False),
        (HttpResponse(400), False),
        (HttpResponse(410), False),
        # not an attempt
        (CircuitOpen(), None),
        # no request was made: the address was refused before connecting (says nothing
        # about the endpoint's health)
        (Refused("127.0.0.1 is a loopback address"), None),
    ],
)
def test_what_counts_as_failure(outcome: object, failure: bool | None) -> None:
    assert is_failure(outcome) is failure  # type: ignore[arg-type]


def test_record_classifies_outcomes() -> None:
    b = CircuitBreaker(failure_threshold=2)
    b.record(HttpResponse(502), T0)
    b.record(CircuitOpen(), T0)  # ignored: does not reset
    b.record(Timeout("read"), T0)
    assert b.state(T0) is OPEN
    assert b.consecutive_failures == 2
