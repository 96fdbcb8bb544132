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
"""

from __future__ import annotations

import html
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

from services.dispatch.formats import RenderedBody
from services.dispatch.formats.cap import APCO_CODES, EVENT_NAMES
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


def pidf_lo(incident: IncidentRecord, sender: str) -> str:
    """The incident location as a PIDF-LO ``<presence>`` document (UTF-8 XML string)."""
    loc = incident.location
    entity = quoteattr(f"pres:{incident.incident_id}@{domain_of(sender)}")
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
        "</presence>"
    )


_PREFIXES = {
    "cancelled": "CANCELLED: detection withdrawn. ",
    "downgraded": "DOWNGRADED: no longer classified as gunfire. ",
}


def eido_document(
    incident: IncidentRecord, event: str, *, sender: str, previous: IncidentRecord | None
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
        f"{_PREFIXES.get(event, '')}"
        f"Acoustic gunfire detection (Shotline): {incident.rounds} round(s) classified as "
        f"{EVENT_NAMES[cls].lower()}, gunfire probability {incident.gunfire_probability:.0%}, "
        f"at {loc.lat:.6f}, {loc.lon:.6f} within {loc.radius95_m:.0f} m (95 %); "
        f"first shot {format_time(incident.shot_time)}; {incident.sensor_count} sensor(s); "
        f"version {incident.version}"
        + (f" (previous {previous.version})" if previous is not None else "")
        + "."
    )
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
            "incidentTypeInternalCode": cls,
            "incidentTypeInternalText": EVENT_NAMES[cls],
            "incidentStatusCommonRegistryText": ["Cancelled" if event == "cancelled" else "Active"],
            "internalIncidentId": incident.incident_id,
            "beatOrDispatchGroupText": incident.zone,
            "locationReference": [{"$ref": location_uid}],
            "notesReference": [{"$ref": notes_uid}],
        },
        "locationComponent": [
            {
                **prologue(location_uid),
                "locationTypeDescriptionRegistryText": "Incident",
                "locationByValue": pidf_lo(incident, sender),
                "locationDescriptionText": "95 % confidence circle of the located shots",
            }
        ],
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
) -> RenderedBody:
    """Serialise :func:`eido_document` (compact UTF-8 JSON)."""
    doc = eido_document(incident, event, sender=sender, previous=previous)
    return RenderedBody(CONTENT_TYPE, orjson.dumps(doc))
