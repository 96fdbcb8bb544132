"""NENA Emergency Incident Data Object (NENA-STA-021, JSON) (pure).

One EIDO per incident version, issued by this Shotline installation (``sender``):

* ``$id`` / ``incidentComponent.$id``: ``urn:emergency:uid:incidentid:<incident_id>:<domain>``
  (the same for every version; ``lastUpdateTimeStamp`` = the version's ``published_at``);
* ``agencyComponent``: the issuing installation (agency type ``police``);
* ``incidentComponent``: APCO incident type ``SHOOT`` for gunfire (``FIREWRKS`` / ``NOISE``
  otherwise), status ``Active`` / ``Cancelled``, the zone as dispatch group;
* ``locationComponent``: the location *by value* as a PIDF-LO document (RFC 4119) holding a
  GML ``Circle`` (RFC 5491) - centre ``lat lon`` and 95 % radius in metres - with the
  confidence (RFC 7459) and ``Triangulation`` as method;
* ``notesComponent``: a one-paragraph human summary (HTML).

With a place (:class:`~services.dispatch.gazetteer.Place`) the location component also
carries the nearest address point as a civic address (RFC 5139 ``civicAddress``: ``HNO`` /
``HNS`` / ``RD`` / ``UNIT`` / ``A3`` / ``PC``) in a second PIDF-LO device (``Derived``: it is
the nearest known address, not the shots' position, so it is not mixed into the circle's
location-info), the nearest intersection's streets as ``crossStreetByValue`` /
``intersectingStreetByValue`` (PIDF-LO civic ``RD``), and the place words, areas and coverage
in ``locationDescriptionText``.
"""

from __future__ import annotations

import html
import re
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson

from services.dispatch.formats import RenderedBody
from services.dispatch.formats.cap import APCO_CODES, EVENT_NAMES
from services.dispatch.gazetteer import NearestAddress, Place
from shared.schemas import IncidentRecord, format_time

CONTENT_TYPE = "application/json"
EIDO_VERSION = "1.0"
CONTEXT = {"@vocab": "./JSON-LD_Contexts/EmergencyIncidentDataObjectType.jsonld"}


def domain_of(sender: str) -> str:
    """The domain part of a sender (``ops@city.example`` -> ``city.example``)."""
    return sender.rsplit("@", 1)[-1]


def uid(kind: str, local: str, sender: str) -> str:
    """A NENA-style globally unique id: ``urn:emergency:uid:<kind>:<local>:<domain>``."""
    return f"urn:emergency:uid:{kind}:{local}:{domain_of(sender)}"


_CIVIC_NS = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"
_HOUSE_NUMBER = re.compile(r"^\s*(\d+)\s*(.*?)\s*$")


def civic_address(address: NearestAddress) -> str:
    """RFC 5139 ``<civicAddress>`` of an address point (elements with a value only)."""
    match = _HOUSE_NUMBER.match(address.number)
    number, suffix = (match.group(1), match.group(2)) if match else (address.number, "")
    parts = [  # in the order RFC 5139's schema sequence requires
        ("A3", address.city),
        ("RD", address.street),
        ("HNO", number),
        ("HNS", suffix),
        ("PC", address.postcode),
        ("UNIT", address.unit),
    ]
    inner = "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in parts if value)
    return f'<civicAddress xmlns="{_CIVIC_NS}">{inner}</civicAddress>'


def _presence(entity: str, devices: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
        f" entity={entity}>{devices}</presence>"
    )


def street_pidf_lo(incident: IncidentRecord, sender: str, street: str) -> str:
    """A street as a PIDF-LO civic location (for cross / intersecting street fields)."""
    entity = quoteattr(f"pres:{incident.incident_id}@{domain_of(sender)}")
    return _presence(
        entity,
        '<dm:device id="street"><gp:geopriv><gp:location-info>'
        f'<civicAddress xmlns="{_CIVIC_NS}"><RD>{escape(street)}</RD></civicAddress>'
        "</gp:location-info><gp:usage-rules/><gp:method>Derived</gp:method>"
        "</gp:geopriv></dm:device>",
    )


def pidf_lo(incident: IncidentRecord, sender: str, place: Place | None = None) -> str:
    """The incident location as a PIDF-LO ``<presence>`` document (UTF-8 XML string); with
    a place's address, a second device holds it as a civic address."""
    loc = incident.location
    entity = quoteattr(f"pres:{incident.incident_id}@{domain_of(sender)}")
    address = ""
    if place is not None and place.address is not None:
        address = (
            '<dm:device id="nearest-address">'
            "<gp:geopriv><gp:location-info>"
            f"{civic_address(place.address)}"
            "</gp:location-info>"
            "<gp:usage-rules/>"
            "<gp:method>Derived</gp:method>"
            "</gp:geopriv>"
            f"<dm:timestamp>{format_time(incident.shot_time)}</dm:timestamp>"
            "</dm:device>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
        ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
        ' xmlns:gml="http://www.opengis.net/gml"'
        ' xmlns:gs="http://www.opengis.net/pidflo/1.0"'
        ' xmlns:con="urn:ietf:params:xml:ns:geopriv:conf"'
        f" entity={entity}>"
        '<dm:device id="incident">'
        "<gp:geopriv><gp:location-info>"
        '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">'
        f"<gml:pos>{loc.lat:.7f} {loc.lon:.7f}</gml:pos>"
        f'<gs:radius uom="urn:ogc:def:uom:EPSG::9001">{loc.radius95_m:.1f}</gs:radius>'
        "</gs:Circle>"
        '<con:confidence pdf="normal">95</con:confidence>'
        "</gp:location-info>"
        "<gp:usage-rules/>"
        "<gp:method>Triangulation</gp:method>"
        "</gp:geopriv>"
        f"<dm:timestamp>{format_time(incident.shot_time)}</dm:timestamp>"
        "</dm:device>"
        f"{address}"
        "</presence>"
    )


_PREFIXES = {
    "cancelled": "CANCELLED: detection withdrawn. ",
    "downgraded": "DOWNGRADED: no longer classified as gunfire. ",
}
#: EIDO has no exercise status of its own: a drill says so in the agency's internal type code
#: and text (``exercise-gunfire``, "EXERCISE, NOT A REAL SHOT: Gunfire") and first in the notes,
#: where a CAD shows it, besides the webhook's ``Shotline-Exercise: true`` header.
EXERCISE_MARK = "EXERCISE, NOT A REAL SHOT:"


def _location_description(place: Place | None) -> str:
    circle = "95 % confidence circle of the located shots"
    if place is None:
        return circle
    words = []
    if place.outside_coverage:
        words.append("OUTSIDE ARRAY COVERAGE")
    if place.address is not None:
        a = place.address
        words.append(f"{round(a.distance_m)} m {a.compass} of {a.label}")
    if place.intersection is not None:
        words.append(f"nearest intersection {place.intersection.text}")
    if place.areas:
        words.append(place.areas_text)
    return "; ".join([circle, *words])


def eido_document(
    incident: IncidentRecord,
    event: str,
    *,
    sender: str,
    previous: IncidentRecord | None,
    place: Place | None = None,
) -> dict[str, Any]:
    """The EIDO as a JSON-ready dict (what :func:`render` serialises)."""
    stamp = format_time(incident.published_at)
    agency = domain_of(sender)
    tag = f"{incident.incident_id}-v{incident.version}"
    incident_uid = uid("incidentid", incident.incident_id, sender)
    location_uid = uid("locationid", tag, sender)
    notes_uid = uid("notesid", tag, sender)

    def prologue(component_id: str) -> dict[str, Any]:
        return {
            "$id": component_id,
            "lastUpdateTimeStamp": stamp,
            "updatedByAgencyReference": {"$ref": agency},
        }

    cls = incident.classification
    loc = incident.location
    summary = (
        f"{EXERCISE_MARK + ' ' if incident.exercise else ''}"
        f"{_PREFIXES.get(event, '')}"
        f"Acoustic gunfire detection (Shotline): {incident.rounds} round(s) classified as "
        f"{EVENT_NAMES[cls].lower()}, gunfire probability {incident.gunfire_probability:.0%}, "
        f"at {loc.lat:.6f}, {loc.lon:.6f} within {loc.radius95_m:.0f} m (95 %); "
        f"first shot {format_time(incident.shot_time)}; {incident.sensor_count} sensor(s); "
        f"version {incident.version}"
        + (f" (previous {previous.version})" if previous is not None else "")
        + "."
        + (f" Place: {place.text}." if place is not None and place.text else "")
    )
    location = {
        **prologue(location_uid),
        "locationTypeDescriptionRegistryText": "Incident",
        "locationByValue": pidf_lo(incident, sender, place),
        "locationDescriptionText": _location_description(place),
    }
    if place is not None and place.intersection is not None:
        first, second = place.intersection.streets
        location["crossStreetByValue"] = [street_pidf_lo(incident, sender, first)]
        location["intersectingStreetByValue"] = [street_pidf_lo(incident, sender, second)]
    return {
        **prologue(incident_uid),
        "eidoVersion": EIDO_VERSION,
        "issuingElementIdentification": sender,
        "agencyComponent": [
            {
                **prologue(agency),
                "agencyRoleDescriptionRegistryText": ["Informational"],
                "agencyType": ["police"],
            }
        ],
        "incidentComponent": {
            **prologue(incident_uid),
            "incidentTypeCommonRegistryText": APCO_CODES[cls],
            "incidentTypeInternalCode": f"exercise-{cls}" if incident.exercise else cls,
            "incidentTypeInternalText": (
                f"{EXERCISE_MARK} {EVENT_NAMES[cls]}" if incident.exercise else EVENT_NAMES[cls]
            ),
            "incidentStatusCommonRegistryText": ["Cancelled" if event == "cancelled" else "Active"],
            "internalIncidentId": incident.incident_id,
            "beatOrDispatchGroupText": incident.zone,
            "locationReference": [{"$ref": location_uid}],
            "notesReference": [{"$ref": notes_uid}],
        },
        "locationComponent": [location],
        "notesComponent": [
            {**prologue(notes_uid), "notesActionComments": f"<p>{html.escape(summary)}</p>"}
        ],
        "@context": CONTEXT,
    }


def render(
    incident: IncidentRecord,
    event: str,
    *,
    sender: str,
    previous: IncidentRecord | None = None,
    place: Place | None = None,
) -> RenderedBody:
    """Serialise :func:`eido_document` (compact UTF-8 JSON)."""
    doc = eido_document(incident, event, sender=sender, previous=previous, place=place)
    return RenderedBody(CONTENT_TYPE, orjson.dumps(doc))
