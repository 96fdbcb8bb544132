"""What to do after a delivery attempt (pure).

:func:`decide` maps (attempt number, outcome, times, policy, jitter) to one of

* :class:`Delivered` - 2xx;
* :class:`Retry` ``(at)`` - network error, timeout, 5xx, 408, 429 (plus any status in
  ``policy.retry_statuses``), honouring ``Retry-After`` (delta-seconds or HTTP-date);
* :class:`GiveUp` ``(reason, exhausted)`` - other 4xx/3xx, or a target address dispatch may
  not send to (:class:`Refused`), at once (``exhausted=False``: the row is *failed*), or
  the retry budget / age limit ran out (``exhausted=True``: the row goes to the dead-letter
  state, replayable);
* :class:`Disable` ``(reason)`` - 410 Gone (``policy.disable_statuses``): the subscription
  is switched off.

Alerts are urgent, so the default schedule starts fast: the first attempt is immediate, then
retries follow about 1 s, 2 s, 5 s, 10 s, 30 s, 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, 4 h
after each failure (13 attempts, about 8 h), each delay spread by +/-20 % jitter so that
receivers coming back are not hit by a synchronised wave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

# --- what happened ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    """The receiver answered. Header names are matched case-insensitively.

    ``body``: the start of the response body, for diagnostics (e.g. FCM error codes).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None


@dataclass(frozen=True)
class NetworkError:
    """No HTTP answer: DNS, connection refused/reset, TLS, protocol error."""

    detail: str


@dataclass(frozen=True)
class Timeout:
    """Connect/read/write/pool timeout: the receiver may or may not have got it."""

    detail: str


@dataclass(frozen=True)
class Refused:
    """Not attempted: the target's addresses are not ones dispatch may send to (private,
    loopback, ...; see :mod:`services.dispatch.targets`). Retrying cannot change that; the
    operator fixes the subscription or the allowed networks, then replays."""

    detail: str


@dataclass(frozen=True)
class CircuitOpen:
    """Not attempted: the endpoint's breaker is open until ``until`` (None: unknown)."""

    until: datetime | None = None


AttemptOutcome = HttpResponse | NetworkError | Timeout | CircuitOpen | Refused

# --- what to do ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """The receiver accepted the message (2xx)."""


@dataclass(frozen=True)
class Retry:
    """Try again at ``at`` (same webhook-id and body)."""

    at: datetime
    reason: str = ""


@dataclass(frozen=True)
class GiveUp:
    """Stop. ``exhausted``: budget/age ran out (dead letter); else refused for good (failed)."""

    reason: str
    exhausted: bool = False


@dataclass(frozen=True)
class Disable:
    """The receiver says the subscription is gone: disable it, fail its pending rows."""

    reason: str


Decision = Delivered | Retry | GiveUp | Disable

# --- policy ----------------------------------------------------------------------------------

#: Delay (seconds) before attempt n+1 after attempt n failed, n = 1, 2, ...
DEFAULT_SCHEDULE_S: tuple[float, ...] = (
    1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400,
)  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """Configurable retry schedule.

    ``schedule_s[n-1]`` is the delay after the n-th failed attempt, so at most
    ``len(schedule_s) + 1`` attempts are made. ``jitter_ratio`` r spreads each delay
    uniformly over [d(1-r), d(1+r)]. No retry is scheduled later than
    ``first_attempt_at + max_age``. A ``Retry-After`` longer than ``retry_after_cap_s`` is
    cut to the cap (an urgent alert is not parked for days; the receiver can say 429 again).
    """

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter_ratio: float = 0.2
    max_age: timedelta = timedelta(hours=24)
    retry_after_cap_s: float = 3600.0
    #: Retried besides every 5xx. FCM adds 401 (access token expired: fetch a new one).
    retry_statuses: frozenset[int] = frozenset({408, 429})
    #: The subscription is gone. Web Push and FCM add 404 (expired registration).
    disable_statuses: frozenset[int] = frozenset({410})

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.schedule_s):
            raise ValueError("schedule delays must be >= 0")
        if not 0 <= self.jitter_ratio < 1:
            raise ValueError("jitter_ratio must be within [0, 1)")
        if self.max_age <= timedelta(0) or self.retry_after_cap_s < 0:
            raise ValueError("max_age must be > 0 and retry_after_cap_s >= 0")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s) + 1


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110: delay-seconds or HTTP-date).

    ``None`` if absent or unparseable (then the schedule alone decides); a date in the past
    gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP-dates are GMT by definition
        when = when.replace(tzinfo=now.tzinfo)
    return max(0.0, (when - now).total_seconds())


def _jittered(delay_s: float, policy: RetryPolicy, jitter: Callable[[], float]) -> float:
    j = jitter()
    if not 0.0 <= j <= 1.0:
        raise ValueError(f"jitter() must return a number in [0, 1], got {j!r}")
    return delay_s * (1.0 + policy.jitter_ratio * (2.0 * j - 1.0))


def decide(
    attempt: int,
    outcome: AttemptOutcome,
    *,
    now: datetime,
    first_attempt_at: datetime,
    policy: RetryPolicy,
    jitter: Callable[[], float],
) -> Decision:
    """Decide what follows attempt number ``attempt`` (1-based) that ended with ``outcome``.

    ``now`` is when the attempt finished; ``first_attempt_at`` when the first attempt of this
    delivery (since the last replay) started - the age limit counts from there. ``jitter``
    returns a uniform number in [0, 1] (inject ``random.random``; tests pass constants).
    :class:`CircuitOpen` spends no attempt: it is retried when the breaker lets a probe
    through, within the age limit. Raises ``ValueError`` if ``attempt < 1`` or jitter is
    out of range.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    deadline = first_attempt_at + policy.max_age

    if isinstance(outcome, CircuitOpen):
        if outcome.until is not None:
            at = max(now, outcome.until)
        else:  # unknown re-open time: wait like after a first failure
            first_delay = policy.schedule_s[0] if policy.schedule_s else 1.0
            at = now + timedelta(seconds=_jittered(first_delay, policy, jitter))
        if at > deadline:
            return GiveUp("circuit open past the delivery's age limit", exhausted=True)
        return Retry(at, "circuit open")

    if isinstance(outcome, Refused):
        return GiveUp(f"target refused: {outcome.detail}", exhausted=False)

    retry_after: float | None = None
    if isinstance(outcome, HttpResponse):
        status = outcome.status
        if 200 <= status < 300:
            return Delivered()
        if status in policy.disable_statuses:
            return Disable(f"receiver answered {status}: subscription gone")
        if not (status >= 500 or status in policy.retry_statuses):
            # 4xx: the receiver understood and refused; 3xx: we never follow redirects (a
            # moved receiver must be re-registered). Retrying would not change the answer.
            return GiveUp(f"receiver answered {status}", exhausted=False)
        retry_after = parse_retry_after(outcome.header("retry-after"), now)
        reason = f"HTTP {status}"
    elif isinstance(outcome, Timeout):
        reason = f"timeout: {outcome.detail}"
    else:
        reason = f"network error: {outcome.detail}"

    if attempt >= policy.max_attempts:
        return GiveUp(f"{reason}; gave up after {attempt} attempts", exhausted=True)
    delay = _jittered(policy.schedule_s[attempt - 1], policy, jitter)
    if retry_after is not None:
        # honour the receiver's wish (never earlier), bounded by the cap
        delay = max(delay, min(retry_after, policy.retry_after_cap_s))
    at = now + timedelta(seconds=delay)
    if at > deadline:
        return GiveUp(f"{reason}; next attempt would pass the age limit", exhausted=True)
    return Retry(at, reason)
