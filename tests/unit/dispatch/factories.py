"""Builders of the dispatch domain tests: incidents and subscriptions with sane defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.dispatch.model import Subscription
from shared.schemas import IncidentRecord

SHOT = datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)
#: Pittsburgh, East Liberty: (lat, lon)
LAT, LON = 40.4573, -79.9251
#: A ~1.1 km square around (LAT, LON); GeoJSON order is [lon, lat]
SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [
            [LON - 0.0066, LAT - 0.005],
            [LON + 0.0066, LAT - 0.005],
            [LON + 0.0066, LAT + 0.005],
            [LON - 0.0066, LAT + 0.005],
            [LON - 0.0066, LAT - 0.005],
        ]
    ],
}


def make_incident(**changes: Any) -> IncidentRecord:
    """A valid gunfire incident at (LAT, LON); keyword arguments override fields.

    ``lat``/``lon``/``radius95_m`` override the location.
    """
    location = {"lat": LAT, "lon": LON, "radius95_m": 18.5}
    for key in ("lat", "lon", "radius95_m"):
        if key in changes:
            location[key] = changes.pop(key)
    fields: dict[str, Any] = {
        "incident_id": "pgh-east:7f3a9c2e1b",
        "version": 1,
        "event": "created",
        "zone": "pgh-east",
        "classification": "gunfire",
        "gunfire_probability": 0.97,
        "rounds": 3,
        "shot_time": SHOT,
        "last_shot_time": SHOT + timedelta(seconds=0.8),
        "location": location,
        "sensor_count": 6,
        "first_detection_received_at": SHOT + timedelta(seconds=0.3),
        "published_at": SHOT + timedelta(seconds=1.1),
    }
    fields.update(changes)
    return IncidentRecord(**fields)


def make_subscription(**changes: Any) -> Subscription:
    """A webhook subscription on SQUARE for every class and event; overrides by keyword."""
    fields: dict[str, Any] = {
        "subscription_id": "sub_1",
        "channel": "webhook",
        "geofence": SQUARE,
        "classes": ["gunfire", "probable_gunfire", "fireworks", "other"],
        "min_probability": 0.0,
        "events": ["created", "updated", "cancelled"],
        "format": "json",
        "url": "https://cad.city.example/hooks/shotline",
    }
    fields.update(changes)
    return Subscription(**fields)
