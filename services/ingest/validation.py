"""Pure decisions about a posted batch: per-item validation, time window, duplicates.

Nothing here touches HTTP, Kafka or the database; ``now`` is always an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from shared.schemas import DetectionIn

#: What a sensor is told about one item of its batch:
#:
#: * ``accepted``: Kafka acknowledged it;
#: * ``duplicate``: ingest already has this (sensor_id, detection_id) with the same content;
#: * ``conflict``: ingest already has this id with *different* content: the new content is
#:   dropped (fix the sensor's id scheme; ids must never be reused);
#: * ``rejected``: invalid (``errors`` name the fields): fix it, then resend;
#: * ``unknown``: handed to Kafka, not acknowledged in time: it may yet be stored. Resend
#:   after Retry-After; the answer is then ``duplicate`` if it was stored.
#: * ``unavailable``: the detection log was unavailable and it was never handed over: it is
#:   not stored. Resend after Retry-After.
Status = Literal["accepted", "duplicate", "conflict", "rejected", "unknown", "unavailable"]
STATUSES: tuple[Status, ...] = (
    "accepted",
    "duplicate",
    "conflict",
    "rejected",
    "unknown",
    "unavailable",
)


@dataclass(frozen=True)
class FieldError:
    """One problem with one field: ``field`` is a path like ``detections[3].arrival_time``."""

    field: str
    reason: str


@dataclass(frozen=True)
class ItemResult:
    index: int
    detection_id: str | None
    status: Status
    errors: tuple[FieldError, ...] = ()


def _path(index: int, loc: tuple[int | str, ...]) -> str:
    out = f"detections[{index}]"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def parse_item(raw: object, index: int) -> DetectionIn | tuple[FieldError, ...]:
    """Validate one item of the batch; errors name each bad field."""
    if not isinstance(raw, dict):
        return (FieldError(f"detections[{index}]", "must be an object"),)
    try:
        return DetectionIn.model_validate(raw)
    except ValidationError as exc:
        return tuple(
            FieldError(_path(index, tuple(err["loc"])), err["msg"]) for err in exc.errors()
        )


_BATCH = TypeAdapter(list[DetectionIn])


def parse_items(raw_items: list[object]) -> list[DetectionIn | tuple[FieldError, ...]]:
    """Validate every item of a batch; each result is the detection or its field errors.

    Validates the whole list in one call first (the common, all-valid case costs a quarter
    less that way) and only on failure item by item, so errors still name each bad field.
    """
    try:
        return list(_BATCH.validate_python(raw_items))
    except ValidationError:
        return [parse_item(item, index) for index, item in enumerate(raw_items)]


def check_time_window(
    detection: DetectionIn,
    index: int,
    *,
    now: datetime,
    clock_tolerance: timedelta,
    max_age: timedelta,
) -> FieldError | None:
    """Reject arrival times in the future beyond the tolerance, or older than ``max_age``.

    A future time means the sensor's clock is wrong (a GPS fault); an old one cannot be
    associated with its shot any more (the locator's window has long closed).
    """
    arrival = detection.arrival_time
    if arrival > now + clock_tolerance:
        ahead = (arrival - now).total_seconds()
        return FieldError(
            f"detections[{index}].arrival_time",
            f"is {ahead:.3f} s in the future (tolerance {clock_tolerance.total_seconds():g} s): "
            "check the sensor's GPS clock",
        )
    if arrival < now - max_age:
        age = (now - arrival).total_seconds()
        return FieldError(
            f"detections[{index}].arrival_time",
            f"is {age:.0f} s old (limit {max_age.total_seconds():g} s): too late to locate",
        )
    return None


def content_digest(detection: DetectionIn) -> int:
    """What a repeat of ``detection`` must match to be a ``duplicate`` and not a ``conflict``.

    The hash of every field as parsed (so ``1`` and ``1.0``, or two spellings of one
    instant, are the same content). Process-local like the memory it is kept in.
    """
    return hash(detection)


@dataclass
class RecentDetections:
    """Which (sensor_id, detection_id) were accepted recently, and the digest of their content,
    to answer ``duplicate`` (same content) or ``conflict`` (different content).

    Bounded two ways: entries older than ``horizon`` (the oldest arrival time ingest still
    accepts, plus a margin) can never be posted again successfully and are dropped; and at most
    ``capacity`` entries are kept (oldest first out). Forgetting is safe: a resent detection is
    then accepted again, and the locator drops it by the same key (at-least-once end to end).
    """

    horizon: timedelta
    capacity: int
    _entries: OrderedDict[tuple[str, str], tuple[datetime, int]] = field(
        default_factory=OrderedDict
    )

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, key: tuple[str, str]) -> int | None:
        """The content digest accepted under ``key``, or None if it is not remembered."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def remember(self, key: tuple[str, str], now: datetime, digest: int = 0) -> None:
        self._entries[key] = (now, digest)
        self._entries.move_to_end(key)
        self.expire(now)

    def expire(self, now: datetime) -> None:
        cutoff = now - self.horizon
        entries = self._entries
        while entries:
            oldest_key = next(iter(entries))
            if len(entries) > self.capacity or entries[oldest_key][0] < cutoff:
                del entries[oldest_key]
            else:
                break


@dataclass
class TokenBucket:
    """Per-sensor request rate limit (pure: ``now`` is monotonic seconds)."""

    rate_per_s: float
    burst: int
    _state: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, sensor_id: str, now: float) -> float | None:
        """Spend one token. Returns None if allowed, else the seconds to wait (Retry-After)."""
        tokens, last = self._state.get(sensor_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._state[sensor_id] = (tokens - 1.0, now)
            return None
        self._state[sensor_id] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s
