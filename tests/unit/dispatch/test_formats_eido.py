"""NENA EIDO messages validate against NENA's OpenAPI schema (tests/standards/eido)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

from services.dispatch.formats import render
from shared.schemas import IncidentRecord
from tests.unit.dispatch import standards
from tests.unit.dispatch.factories import make_incident

SENDER = "shotline.city.example"


@pytest.fixture(scope="module")
def eido_validator() -> Draft4Validator:
    return standards.eido_validator()


def test_nenas_own_sample_validates(eido_validator: Draft4Validator) -> None:
    # the validator is built right: NENA's sample passes
    eido_validator.validate(
        orjson.loads((standards.EIDO_DIR / "sample-call-transfer.json").read_bytes())
    )


EDGE_INCIDENTS = [
    make_incident(),
    make_incident(
        lat=-90.0,
        lon=180.0,
        radius95_m=0.0,
        gunfire_probability=0.0,
        rounds=1,
        sensor_count=0,
        classification="other",
    ),
    make_incident(classification="fireworks", version=9, event="updated"),
    make_incident(classification="probable_gunfire", incident_id="z.1_a:b-c", version=2),
]


@pytest.mark.parametrize("inc", EDGE_INCIDENTS)
@pytest.mark.parametrize("event", ["created", "updated", "downgraded", "cancelled"])
def test_every_message_validates(
    eido_validator: Draft4Validator, inc: IncidentRecord, event: str
) -> None:
    previous = (
        make_incident(incident_id=inc.incident_id, version=inc.version - 1)
        if inc.version > 1
        else None
    )
    body = render("eido", inc, event, sender=SENDER, previous=previous).body  # type: ignore[arg-type]
    eido_validator.validate(orjson.loads(body))


def eido(inc: IncidentRecord | None = None, event: str = "created") -> dict[str, Any]:
    return orjson.loads(render("eido", inc or make_incident(), event, sender=SENDER).body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("classification", "code"),
    [
        # APCO common incident type codes
        ("gunfire", "SHOOT"),
        ("probable_gunfire", "SHOOT"),
        ("fireworks", "FIREWRKS"),
        ("other", "NOISE"),
    ],
)
def test_incident_type(classification: str, code: str) -> None:
    doc = eido(make_incident(classification=classification))
    assert doc["incidentComponent"]["incidentTypeCommonRegistryText"] == code


def test_apco_codes_exist_in_the_registry() -> None:
    codes_file = standards.EIDO_DIR / "apco-codes.yaml"
    enum = yaml.safe_load(codes_file.read_text())["components"]["schemas"][
        "apcoIncidentCategoryCodeSimpleType"
    ]["enum"]
    assert {"SHOOT", "FIREWRKS", "NOISE"} <= set(enum)


def test_location_by_value_is_a_pidf_lo_circle() -> None:
    inc = make_incident(lat=40.4573, lon=-79.9251, radius95_m=18.5)
    doc = eido(inc)
    location = doc["locationComponent"][0]
    # the incident points at its location component
    assert doc["incidentComponent"]["locationReference"] == [{"$ref": location["$id"]}]
    pidf = ET.fromstring(location["locationByValue"].encode())
    ns = {
        "gml": "http://www.opengis.net/gml",
        "gs": "http://www.opengis.net/pidflo/1.0",
        "con": "urn:ietf:params:xml:ns:geopriv:conf",
    }
    assert pidf.tag == "{urn:ietf:params:xml:ns:pidf}presence"
    circle = pidf.find(".//gs:Circle", ns)
    assert circle is not None
    assert circle.get("srsName") == "urn:ogc:def:crs:EPSG::4326"
    lat, lon = (float(v) for v in circle.findtext("gml:pos", namespaces=ns).split())  # type: ignore[union-attr]
    assert (lat, lon) == (40.4573, -79.9251)  # RFC 5491: latitude first
    radius = circle.find("gs:radius", ns)
    assert radius is not None and float(radius.text or "") == 18.5
    assert radius.get("uom") == "urn:ogc:def:uom:EPSG::9001"  # metres
    assert pidf.findtext(".//con:confidence", namespaces=ns) == "95"


def test_components_share_the_issuing_agency_and_time() -> None:
    doc = eido()
    agency = doc["agencyComponent"][0]["$id"]
    assert doc["issuingElementIdentification"] == SENDER
    components = [
        doc,
        doc["incidentComponent"],
        *doc["locationComponent"],
        *doc["agencyComponent"],
        *doc["notesComponent"],
    ]
    for component in components:
        assert component["updatedByAgencyReference"] == {"$ref": agency}
        assert component["lastUpdateTimeStamp"] == "2026-11-25T01:02:04.223456Z"


def test_cancelled_status() -> None:
    assert eido(make_incident(version=2), "cancelled")["incidentComponent"][
        "incidentStatusCommonRegistryText"
    ] == ["Cancelled"]
    assert eido()["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Active"]


@pytest.mark.parametrize(
    "breakage",
    [
        # the schema bites: required members and types are enforced
        lambda d: d.pop("agencyComponent"),
        lambda d: d["incidentComponent"].pop("incidentTypeCommonRegistryText"),
        lambda d: d["locationComponent"][0].pop("updatedByAgencyReference"),
        lambda d: d.update(eidoVersion="2.0"),
        lambda d: d.update(lastUpdateTimeStamp="yesterday"),
    ],
)
def test_the_schema_bites(eido_validator: Draft4Validator, breakage: Any) -> None:
    doc = eido()
    breakage(doc)
    with pytest.raises(ValidationError):
        eido_validator.validate(doc)
