"""Every format carries a version's place words, and still validates (CAP XSD, EIDO schema,
our JSON Schema); without a place every format is exactly as before."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson
import pytest

from services.dispatch.formats import FORMAT_NAMES, render
from services.dispatch.formats.cap import CAP_NS
from services.dispatch.gazetteer import AreaName, NearestAddress, NearestIntersection, Place
from services.dispatch.push import push_message
from tests.unit.dispatch import standards
from tests.unit.dispatch.factories import make_incident

SENDER = "shotline.city.example"
CIVIC = "{urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr}"

FULL = Place(
    areas=(AreaName("beat", "12"), AreaName("district", "Zone 3 & <4>")),
    address=NearestAddress(
        number="142B",
        street="O'Hara & Main St",
        unit="4",
        city="Pittsburgh",
        postcode="15213",
        lat=40.45718,
        lon=-79.92525,
        distance_m=18.2,
        bearing_deg=47.0,
    ),
    intersection=NearestIntersection(
        streets=("O'Hara & Main St", "2nd Ave"), lat=40.4571, lon=-79.9249, distance_m=41.0
    ),
    outside_coverage=False,
    layers_version="abc123def456",
)
#: only an area layer loaded, the point outside the array's coverage
SPARSE = Place(
    areas=(AreaName("beat", "7"),),
    address=None,
    intersection=None,
    outside_coverage=True,
    layers_version="v2",
)
PLACES = [FULL, SPARSE]


def test_the_address_line_reads_as_a_dispatcher_says_it() -> None:
    assert FULL.text == "142B O'Hara & Main St Unit 4, 18 m NE · near O'Hara & Main St & 2nd Ave"
    assert SPARSE.text == "OUTSIDE ARRAY COVERAGE"


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("event", ["created", "updated", "cancelled"])
def test_json_carries_the_place_and_validates(place: Place, event: str) -> None:
    previous = make_incident() if event != "created" else None
    incident = make_incident(version=2 if previous else 1, event=event)
    body = render("json", incident, event, sender=SENDER, previous=previous, place=place).body
    doc = orjson.loads(body)
    standards.alert_validator().validate(doc)
    assert doc["data"]["place"] == place.as_json()
    assert doc["data"]["place"]["text"] == place.text


def test_the_json_schema_checks_the_place() -> None:
    doc = orjson.loads(render("json", make_incident(), "created", sender=SENDER, place=FULL).body)
    del doc["data"]["place"]["address"]["compass"]
    assert not standards.alert_validator().is_valid(doc)


@pytest.mark.parametrize("place", PLACES)
def test_cap_area_has_the_words_and_a_geocode_per_layer(place: Place) -> None:
    body = render("cap", make_incident(), "created", sender=SENDER, place=place).body
    root = ET.fromstring(body)
    standards.cap_schema().validate(root)
    ns = {"cap": CAP_NS}
    area = root.find("cap:info/cap:area", ns)
    assert area is not None
    desc = area.findtext("cap:areaDesc", namespaces=ns)
    assert desc is not None and desc.endswith(
        "95 % confidence circle of the located shots, zone pgh-east"
    )
    for words in (place.address and place.address.text, place.areas_text):
        if words:
            assert words in desc
    assert desc.startswith("OUTSIDE ARRAY COVERAGE") is bool(place.outside_coverage)
    pairs = [
        (g.findtext("cap:valueName", namespaces=ns), g.findtext("cap:value", namespaces=ns))
        for g in area.findall("cap:geocode", ns)
    ]
    assert pairs == [(a.layer, a.name) for a in place.areas]
    params = {
        p.findtext("cap:valueName", namespaces=ns): p.findtext("cap:value", namespaces=ns)
        for p in root.findall("cap:info/cap:parameter", ns)
    }
    assert params["outsideCoverage"] == ("true" if place.outside_coverage else "false")
    if place.address is not None:
        assert params["nearestAddress"] == place.address.text


@pytest.mark.parametrize("place", PLACES)
def test_eido_location_has_the_civic_address_and_validates(place: Place) -> None:
    doc = orjson.loads(render("eido", make_incident(), "created", sender=SENDER, place=place).body)
    standards.eido_validator().validate(doc)
    (location,) = doc["locationComponent"]
    presence = ET.fromstring(location["locationByValue"])
    civic = presence.find(f".//{CIVIC}civicAddress")
    if place.address is None:
        assert civic is None
        assert "crossStreetByValue" not in location
    else:
        assert civic is not None
        # RFC 5139's schema is a sequence: the order is part of validity
        assert [(el.tag.removeprefix(CIVIC), el.text) for el in civic] == [
            ("A3", "Pittsburgh"),
            ("RD", "O'Hara & Main St"),
            ("HNO", "142"),
            ("HNS", "B"),
            ("PC", "15213"),
            ("UNIT", "4"),
        ]
        cross = ET.fromstring(location["crossStreetByValue"][0])
        other = ET.fromstring(location["intersectingStreetByValue"][0])
        assert cross.findtext(f".//{CIVIC}RD") == "O'Hara & Main St"
        assert other.findtext(f".//{CIVIC}RD") == "2nd Ave"
        assert "18 m NE of 142B O'Hara & Main St Unit 4" in location["locationDescriptionText"]
    # the geodetic circle is still the location of the shots
    assert presence.find(".//{http://www.opengis.net/pidflo/1.0}Circle") is not None
    for named in place.areas:
        assert f"{named.layer} {named.name}" in location["locationDescriptionText"]


@pytest.mark.parametrize("place", PLACES)
def test_push_shows_the_short_address_line(place: Place) -> None:
    message = push_message(make_incident(), "created", place)
    assert message.body.startswith(place.text + " · zone pgh-east")
    assert message.data["address"] == place.text
    assert all(isinstance(v, str) for v in message.data.values())


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_without_a_place_every_format_is_as_before(fmt: str) -> None:
    incident = make_incident()
    plain = render(fmt, incident, "created", sender=SENDER)  # type: ignore[arg-type]
    assert render(fmt, incident, "created", sender=SENDER, place=None) == plain  # type: ignore[arg-type]
    for word in (b"place", b"geocode", b"civicAddress", b"crossStreet", b"nearestAddress"):
        assert word not in plain.body
    message = push_message(incident, "created")
    assert message.body.startswith("Zone pgh-east · shot at ") and "address" not in message.data


@pytest.mark.parametrize("fmt", ["json", "cap"])
def test_clip_links_and_place_words_travel_together_and_validate(fmt: str) -> None:
    clip = {"sensor_id": "s1", "detection_id": "on-a", "sha256": "ab" * 32,
            "url": "https://dispatch.example/v1/clips/s1/on-a.wav?expires=1&sig=00",
            "expires_at": "2026-11-25T02:02:04.250000Z"}  # fmt: skip
    body = render(fmt, make_incident(), "created", sender=SENDER, audio=[clip], place=FULL).body  # type: ignore[arg-type]
    if fmt == "json":
        doc = orjson.loads(body)
        standards.alert_validator().validate(doc)
        assert doc["data"]["audio"] == [clip] and doc["data"]["place"] == FULL.as_json()
    else:
        # CAP's <info> is a sequence: parameters, then resources, then areas
        root = ET.fromstring(body)
        standards.cap_schema().validate(root)
        assert root.find(f"{{{CAP_NS}}}info/{{{CAP_NS}}}resource") is not None
        assert root.find(f"{{{CAP_NS}}}info/{{{CAP_NS}}}area/{{{CAP_NS}}}geocode") is not None
