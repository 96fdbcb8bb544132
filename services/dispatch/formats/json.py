"""Shotline's native JSON alert (documented by ``schemas/alert.schema.json``).

The envelope follows the Standard Webhooks payload convention
(``{"type", "timestamp", "data"}``)::

    {"type": "incident.created", "timestamp": "<published_at>",
     "data": {"schema_version": 1, "incident_id": ..., "version": 2, "event": "created", ...}}

Times are RFC 3339 UTC with six fractional digits (as on the incidents topic).
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from services.dispatch.formats import RenderedBody
from services.dispatch.gazetteer import Place
from shared.schemas import IncidentRecord, format_time

CONTENT_TYPE = "application/json"
ALERT_SCHEMA_VERSION = 1
#: The JSON Schema of the message (ships with the package).
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "alert.schema.json"


@cache
def _schema() -> dict[str, Any]:
    return orjson.loads(SCHEMA_PATH.read_bytes())  # type: ignore[no-any-return]


def alert_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, with ``examples``) of the native JSON alert.

    For the admin API to publish under OpenAPI ``webhooks``. A fresh deep copy per call (the
    caller may rewrite ``$ref``s); raises ``FileNotFoundError`` if the package lost its file.
    """
    return copy.deepcopy(_schema())


def alert_document(
    incident: IncidentRecord,
    event: str,
    *,
    sender: str,
    previous: IncidentRecord | None,
    audio: list[dict[str, str]] | None = None,
    place: Place | None = None,
) -> dict[str, Any]:
    """The alert as a JSON-ready dict (what :func:`render` serialises). ``audio``: signed,
    expiring links to the clips of the sensors that located it (services/dispatch/clips.py);
    the key is present only when there is at least one. ``data.place`` only when there is
    a place."""
    loc = incident.location
    location: dict[str, Any] = {"lat": loc.lat, "lon": loc.lon, "radius95_m": loc.radius95_m}
    if loc.semi_major_m is not None and loc.semi_minor_m is not None:
        location["ellipse95"] = {
            "semi_major_m": loc.semi_major_m,
            "semi_minor_m": loc.semi_minor_m,
            "orientation_deg": loc.orientation_deg,
        }
    doc = {
        "type": f"incident.{event}",
        "timestamp": format_time(incident.published_at),
        "data": {
            "schema_version": ALERT_SCHEMA_VERSION,
            "sender": sender,
            "incident_id": incident.incident_id,
            "version": incident.version,
            "previous_version": None if previous is None else previous.version,
            "event": event,
            "classification": incident.classification,
            "gunfire_probability": incident.gunfire_probability,
            "rounds": incident.rounds,
            "shot_time": format_time(incident.shot_time),
            "last_shot_time": format_time(incident.last_shot_time),
            "location": location,
            "sensor_count": incident.sensor_count,
            "zone": incident.zone,
            "detection_received_at": format_time(incident.first_detection_received_at),
            "published_at": format_time(incident.published_at),
            "exercise": incident.exercise,
            **_review(incident),
        },
    }
    if audio:
        doc["data"]["audio"] = audio
    if place is not None:
        doc["data"]["place"] = place.as_json()
    return doc


def _review(incident: IncidentRecord) -> dict[str, Any]:
    """The human review of this version, when it carries one (``review`` is absent on a
    machine alert to a subscription that does not wait for review)."""
    r = incident.review
    if r is None:
        return {}
    return {
        "review": {
            "status": r.status,
            "reviewed_by": r.reviewed_by,
            "reason": r.reason,
            "decided_at": format_time(r.decided_at),
            "late": r.late,
        }
    }


def render(
    incident: IncidentRecord,
    event: str,
    *,
    sender: str,
    previous: IncidentRecord | None = None,
    audio: list[dict[str, str]] | None = None,
    place: Place | None = None,
) -> RenderedBody:
    """Serialise :func:`alert_document` (compact UTF-8 JSON)."""
    doc = alert_document(
        incident, event, sender=sender, previous=previous, audio=audio, place=place
    )
    return RenderedBody(CONTENT_TYPE, orjson.dumps(doc))
