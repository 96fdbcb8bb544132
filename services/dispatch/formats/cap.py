"""OASIS Common Alerting Protocol 1.2 (pure).

Mapping of an incident version to one ``<alert>``:

* ``identifier`` ``shotline-<incident_id>-v<version>-<message id>``: unique per message
  of the sender (one version is an Alert to one subscriber and an Update to another);
  ``sent`` = the version's ``published_at``;
* ``msgType`` Alert / Update / Cancel for created / updated (and downgraded) / cancelled,
  ``references`` ``sender,identifier,sent`` of every earlier message this receiver may have
  got about the incident, ``incidents`` the incident id (correlates every message of one
  incident even without ``references``);
* a *downgraded* message (an alerted gunfire incident reclassified) is an Update whose
  headline and description start with ``DOWNGRADED``, with ``responseType`` Monitor;
* ``scope`` Restricted (public-safety dispatch), ``category`` Security, ``urgency``
  Immediate (Past for a cancel), ``severity`` from the class, ``certainty`` from the gunfire
  probability, ``eventCode`` APCO (``SHOOT``...), ``onset`` the first shot;
* one ``area`` with a ``circle`` ``"lat,lon radius_km"`` = the 95 % error circle; with a
  place, its ``areaDesc`` leads with the place words (nearest address, intersection, areas,
  coverage) and a ``geocode`` pair per area layer (``valueName`` the layer, ``value`` the
  area's name), plus ``parameter`` s ``nearestAddress`` / ``nearestIntersection`` /
  ``outsideCoverage``.

CAP's date-time admits no ``Z`` and no fractional seconds: times are written
``YYYY-MM-DDThh:mm:ss-00:00`` (UTC), truncated to the second; the exact times are kept in
``parameter`` elements.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime

from services.dispatch.formats import RenderedBody
from services.dispatch.gazetteer import Place
from shared.schemas import IncidentRecord, format_time

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CONTENT_TYPE = "application/common-alerting-protocol+xml"

MSG_TYPES = {
    "created": "Alert",
    "updated": "Update",
    "downgraded": "Update",
    "cancelled": "Cancel",
}
EVENT_NAMES = {
    "gunfire": "Gunfire",
    "probable_gunfire": "Probable gunfire",
    "fireworks": "Fireworks",
    "other": "Impulsive noise",
}
#: APCO common incident type codes (NIEM apco namespace)
APCO_CODES = {
    "gunfire": "SHOOT",
    "probable_gunfire": "SHOOT",
    "fireworks": "FIREWRKS",
    "other": "NOISE",
}
SEVERITIES = {
    "gunfire": "Severe",
    "probable_gunfire": "Severe",
    "fireworks": "Minor",
    "other": "Unknown",
}
RESTRICTION = "Public-safety dispatch and law enforcement only"
#: CAP 1.2 §3.2.1: with status Exercise, "exercise identifier SHOULD appear in <note>".
EXERCISE_NOTE = "EXERCISE: Shotline drill (shotline drill), not a real shot"
SENDER_NAME = "Shotline acoustic gunfire detection"


def cap_time(value: datetime) -> str:
    """CAP 1.2 date-time: UTC as ``-00:00``, whole seconds (fraction truncated)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"


def identifier(incident: IncidentRecord, message_id: str | None = None) -> str:
    """The CAP identifier of one message: incident, version and the message's own id.

    Unique per message of a sender as CAP requires, given unique ``message_id``s (the
    webhook-ids: one per subscription, incident version and generation). Without a
    ``message_id`` it names the incident version only (documentation examples).
    """
    base = f"shotline-{incident.incident_id}-v{incident.version}"
    return base if message_id is None else f"{base}-{message_id}"


def reference(sender: str, incident: IncidentRecord, message_id: str | None = None) -> str:
    """``sender,identifier,sent`` of the message rendered for ``incident`` (CAP references)."""
    return f"{sender},{identifier(incident, message_id)},{cap_time(incident.published_at)}"


def certainty(probability: float) -> str:
    """CAP certainty from a gunfire probability (CAP: Likely > ~50 %, Possible <= ~50 %)."""
    if probability > 0.5:
        return "Likely"
    if probability >= 0.05:
        return "Possible"
    return "Unlikely"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def _pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
    el = _sub(parent, tag)
    _sub(el, "valueName", name)
    _sub(el, "value", value)


def _downgrade(incident: IncidentRecord, previous: IncidentRecord | None) -> str:
    was = "gunfire" if previous is None else EVENT_NAMES[previous.classification].lower()
    return f"DOWNGRADED from {was} to {EVENT_NAMES[incident.classification].lower()}"


def _description(incident: IncidentRecord, event: str, previous: IncidentRecord | None) -> str:
    loc = incident.location
    what = EVENT_NAMES[incident.classification].lower()
    text = (
        f"Acoustic sensors located {incident.rounds} round(s) classified as {what} "
        f"(gunfire probability {incident.gunfire_probability:.0%}) at "
        f"{loc.lat:.6f}, {loc.lon:.6f} within {loc.radius95_m:.0f} m (95 %), "
        f"zone {incident.zone}; first shot {format_time(incident.shot_time)}, "
        f"{incident.sensor_count} sensor(s)."
    )
    if event == "cancelled":
        text = "CANCELLED: this detection has been withdrawn. " + text
    elif event == "downgraded":
        text = f"{_downgrade(incident, previous)}: no longer classified as gunfire. " + text
    if incident.exercise:
        text = "EXERCISE, NOT A REAL SHOT. " + text
    return text


def area_desc(place: Place) -> str:
    """``142 Main St, 18 m NE; near Main St & 2nd Ave; beat 12, district 3``."""
    parts = []
    if place.outside_coverage:
        parts.append("OUTSIDE ARRAY COVERAGE")
    if place.address is not None:
        parts.append(place.address.text)
    if place.intersection is not None:
        parts.append(f"near {place.intersection.text}")
    if place.areas:
        parts.append(place.areas_text)
    return "; ".join(parts) or "no address, street or area near the located shots"


def _place_parameters(place: Place | None) -> list[tuple[str, str]]:
    if place is None:
        return []
    out = []
    if place.address is not None:
        out.append(("nearestAddress", place.address.text))
    if place.intersection is not None:
        out.append(("nearestIntersection", place.intersection.text))
    if place.outside_coverage is not None:
        out.append(("outsideCoverage", "true" if place.outside_coverage else "false"))
    return out


def render(
    incident: IncidentRecord,
    event: str,
    *,
    sender: str,
    previous: IncidentRecord | None = None,
    audio: list[dict[str, str]] | None = None,
    message_id: str | None = None,
    references: Sequence[str] = (),
    place: Place | None = None,
) -> RenderedBody:
    """One CAP 1.2 ``<alert>`` (UTF-8 XML with declaration). See the module docstring.
    ``audio``: clip links (services/dispatch/clips.py), one ``<resource>`` each (CAP's own
    ``<digest>`` is SHA-1, so the clip's SHA-256 is stated in ``<resourceDesc>``)."""
    cls = incident.classification
    loc = incident.location
    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(alert, "identifier", identifier(incident, message_id))
    _sub(alert, "sender", sender)
    _sub(alert, "sent", cap_time(incident.published_at))
    _sub(alert, "status", "Exercise" if incident.exercise else "Actual")
    _sub(alert, "msgType", MSG_TYPES[event])
    _sub(alert, "scope", "Restricted")
    _sub(alert, "restriction", RESTRICTION)
    if incident.exercise:
        _sub(alert, "note", EXERCISE_NOTE)
    if event != "created":
        if references:
            _sub(alert, "references", " ".join(references))
        elif previous is not None:
            _sub(alert, "references", reference(sender, previous))
    _sub(alert, "incidents", incident.incident_id)

    info = _sub(alert, "info")
    _sub(info, "language", "en-US")
    _sub(info, "category", "Security")
    _sub(info, "event", EVENT_NAMES[cls])
    if event == "cancelled":
        _sub(info, "responseType", "AllClear")
    elif event == "downgraded":
        _sub(info, "responseType", "Monitor")
    _sub(info, "urgency", "Past" if event == "cancelled" else "Immediate")
    _sub(info, "severity", SEVERITIES[cls])
    _sub(
        info,
        "certainty",
        "Unlikely" if event == "cancelled" else certainty(incident.gunfire_probability),
    )
    _pair(info, "eventCode", "APCO", APCO_CODES[cls])
    _sub(info, "onset", cap_time(incident.shot_time))
    _sub(info, "senderName", SENDER_NAME)
    headline = f"{EVENT_NAMES[cls]}: {incident.rounds} round(s), zone {incident.zone}"
    if event == "downgraded":
        headline = f"{_downgrade(incident, previous)}: {incident.rounds} round(s)"
    _sub(info, "headline", headline)
    _sub(info, "description", _description(incident, event, previous))
    for name, value in (
        ("incidentVersion", str(incident.version)),
        ("classification", cls),
        ("gunfireProbability", f"{incident.gunfire_probability:.3f}"),
        ("rounds", str(incident.rounds)),
        ("sensorCount", str(incident.sensor_count)),
        ("zone", incident.zone),
        ("radius95Metres", f"{loc.radius95_m:.1f}"),
        ("shotTime", format_time(incident.shot_time)),
        ("lastShotTime", format_time(incident.last_shot_time)),
        ("detectionReceivedAt", format_time(incident.first_detection_received_at)),
    ):
        _pair(info, "parameter", name, value)
    for name, value in _place_parameters(place):
        _pair(info, "parameter", name, value)
    for clip in audio or []:
        resource = _sub(info, "resource")
        _sub(resource, "resourceDesc",
             f"audio clip of sensor {clip['sensor_id']}, detection {clip['detection_id']}; "
             f"SHA-256 {clip['sha256']}; link expires {clip['expires_at']}")
        _sub(resource, "mimeType", "audio/wav")
        _sub(resource, "uri", clip["url"])
    area = _sub(info, "area")
    circle_text = f"95 % confidence circle of the located shots, zone {incident.zone}"
    _sub(area, "areaDesc", circle_text if place is None else f"{area_desc(place)}; {circle_text}")
    _sub(area, "circle", f"{loc.lat:.6f},{loc.lon:.6f} {loc.radius95_m / 1000.0:.4f}")
    for named in () if place is None else place.areas:
        _pair(area, "geocode", named.layer, named.name)

    # default_namespace keeps the document as CAP receivers expect it: <alert xmlns="...">
    body = ET.tostring(alert, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NS)
    return RenderedBody(CONTENT_TYPE, body)
