"""Circuit breaker per receiver endpoint, as a pure state machine taking ``now``.

::

    CLOSED --N consecutive failures--> OPEN --cooldown elapsed--> HALF_OPEN
       ^                                 ^                            |
       |                                 +------ probe fails ---------+
       +------------------- probe succeeds ---------------------------+

While OPEN nothing is sent to the endpoint (its deliveries wait without spending attempts),
so one dead receiver costs no worker slots. In HALF_OPEN exactly one probe may be in flight;
a probe that never reports (its task was cancelled) frees the slot after ``probe_timeout``.

What counts as a failure (:func:`is_failure`): no answer (network error, timeout), 5xx, 408
and 429. Any other answer - including 4xx - proves the endpoint is alive and resets the
count. Not thread-safe: one instance per endpoint per event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from services.dispatch.retry import (
    AttemptOutcome,
    CircuitOpen,
    HttpResponse,
    Refused,
)


class BreakerState(IntEnum):
    """Values double as the ``..._breaker_state`` gauge (0 closed, 1 half-open, 2 open)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


def is_failure(outcome: AttemptOutcome) -> bool | None:
    """Does ``outcome`` count against the endpoint? ``None``: not an attempt (circuit open)."""
    if isinstance(outcome, CircuitOpen | Refused):  # no request was made
        return None
    if isinstance(outcome, HttpResponse):
        return outcome.status >= 500 or outcome.status in (408, 429)
    return True  # NetworkError, Timeout


@dataclass
class CircuitBreaker:
    """One endpoint's breaker. All methods take ``now`` (timezone-aware) and never block."""

    failure_threshold: int = 5
    cooldown: timedelta = timedelta(seconds=30)
    probe_timeout: timedelta = timedelta(seconds=60)
    _failures: int = field(default=0, init=False)
    _opened_at: datetime | None = field(default=None, init=False)
    _probe_started_at: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if self.cooldown <= timedelta(0) or self.probe_timeout <= timedelta(0):
            raise ValueError("cooldown and probe_timeout must be > 0")

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def state(self, now: datetime) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if now < self._opened_at + self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def reopens_at(self) -> datetime | None:
        """When an OPEN breaker lets a probe through (None when closed)."""
        return None if self._opened_at is None else self._opened_at + self.cooldown

    def _probe_busy(self, now: datetime) -> bool:
        started = self._probe_started_at
        return started is not None and now < started + self.probe_timeout

    def allows(self, now: datetime) -> bool:
        """Would a call be let through now? No side effect (use it to filter claims)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        return not self._probe_busy(now)

    def acquire(self, now: datetime) -> bool:
        """Ask to make a call now. True: go ahead (in HALF_OPEN this takes the probe slot)."""
        if not self.allows(now):
            return False
        if self.state(now) is BreakerState.HALF_OPEN:
            self._probe_started_at = now
        return True

    def record_success(self, now: datetime) -> None:
        """The endpoint answered (anything but a failure): close and reset."""
        self._failures = 0
        self._opened_at = None
        self._probe_started_at = None

    def record_failure(self, now: datetime) -> None:
        """A call failed at ``now``: count it; open at the threshold; a failed probe re-opens."""
        state = self.state(now)
        if state is BreakerState.HALF_OPEN:
            self._opened_at = now  # the probe failed: another full cool-down
            self._probe_started_at = None
        elif state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = now
        # OPEN: a call started before the breaker opened failed late; nothing new to learn

    def record(self, outcome: AttemptOutcome, now: datetime) -> None:
        """Record an attempt's outcome (classification by :func:`is_failure`)."""
        failed = is_failure(outcome)
        if failed is None:
            return
        if failed:
            self.record_failure(now)
        else:
            self.record_success(now)
