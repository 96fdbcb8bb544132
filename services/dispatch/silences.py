"""Silences: a supervisor holds delivery for an area and a time window (pure).

The model is Alertmanager's: a silence has matchers (here an area - a GeoJSON Polygon or
MultiPolygon - and optionally some classes), a start, an end, an author and a reason, and it
can be expired early. A silenced incident is stored, shown and reported as usual; only its
delivery is held. When the silence ends (or is expired) the held incidents that are still
relevant are delivered (:func:`release`).

Gunfire above the probability floor is never silenced unless the silence says so
explicitly (``include_high_gunfire``): a fireworks silence must not swallow a shooting at
the stadium.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from shared.schemas import IncidentRecord


@dataclass(frozen=True, eq=False)
class Silence:
    silence_id: str
    area: Mapping[str, Any]
    starts_at: datetime
    ends_at: datetime
    classes: frozenset[str] | None = None  # None: every class
    include_high_gunfire: bool = False
    expired_at: datetime | None = None

    @cached_property
    def geometry(self) -> BaseGeometry:
        from services.dispatch.routing import validate_geofence

        geometry = validate_geofence(dict(self.area))
        shapely.prepare(geometry)
        return geometry

    def active(self, now: datetime) -> bool:
        """Started, not ended and not expired at ``now`` (the end is exclusive)."""
        end = self.ends_at if self.expired_at is None else min(self.ends_at, self.expired_at)
        return self.starts_at <= now < end


def silencing(
    record: IncidentRecord, silences: Iterable[Silence], *, now: datetime, gunfire_floor: float
) -> Silence | None:
    """The silence that holds ``record``'s delivery at ``now``, or None (deliver).

    A silence matches when it is active, the incident's class is among its classes (if it
    names any), and the incident's location is in its area (edge included). It never
    matches gunfire with ``gunfire_probability >= gunfire_floor`` unless
    ``include_high_gunfire``. Cancels are never held (a subscriber told of an incident must
    hear it is off). Of several, the one ending last is returned (it decides the release).
    """
    if record.event == "cancelled":
        return None
    point = Point(record.location.lon, record.location.lat)
    matches = [
        s
        for s in silences
        if s.active(now)
        and (s.classes is None or record.classification in s.classes)
        and not (
            record.classification == "gunfire"
            and record.gunfire_probability >= gunfire_floor
            and not s.include_high_gunfire
        )
        and s.geometry.covers(point)
    ]
    return max(matches, key=lambda s: (s.ends_at, s.silence_id), default=None)


def release(
    record: IncidentRecord,
    silences: Iterable[Silence],
    *,
    now: datetime,
    gunfire_floor: float,
    relevance_s: float,
) -> str | None:
    """What to do with a held incident (its current version ``record``) now.

    Returns None to deliver it, or the reason it stays undelivered: ``"held"`` while another
    silence still matches, ``"cancelled"`` when it was cancelled meanwhile, ``"stale"`` when
    its last round is more than ``relevance_s`` old (an hours-old alert sends nobody).
    """
    if record.event == "cancelled":
        return "cancelled"
    if silencing(record, silences, now=now, gunfire_floor=gunfire_floor) is not None:
        return "held"
    if now - record.last_shot_time > timedelta(seconds=relevance_s):
        return "stale"
    return None
