"""Injectable clocks: domain code takes ``now``; adapters get it from a :data:`Clock`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, timezone-aware UTC."""
    return datetime.now(UTC)


def monotonic() -> float:
    return time.monotonic()
