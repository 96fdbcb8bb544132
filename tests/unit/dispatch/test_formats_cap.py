"""CAP 1.2 alerts validate against the official OASIS XSD (../shared/standards/cap-1.2)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
import xmlschema

from services.dispatch.formats import render
from services.dispatch.formats.cap import CAP_NS, cap_time, certainty
from shared.schemas import IncidentRecord
from tests.unit.dispatch import standards
from tests.unit.dispatch.factories import SHOT, make_incident

SENDER = "shotline.city.example"
NS = {"cap": CAP_NS}


@pytest.fixture(scope="module")
def cap_schema() -> xmlschema.XMLSchema:
    return standards.cap_schema()


def parse(body: bytes) -> ET.Element:
    return ET.fromstring(body)


def text(root: ET.Element, path: str) -> str | None:
    el = root.find(path, NS)
    return None if el is None else el.text


EDGE_INCIDENTS = [
    # typical
    make_incident(),
    # extreme coordinates, zero radius, probability 0, one round, class other
    make_incident(
        lat=-90.0,
        lon=180.0,
        radius95_m=0.0,
        gunfire_probability=0.0,
        rounds=1,
        sensor_count=0,
        classification="other",
    ),
    # the other corner, certain gunfire, a huge radius
    make_incident(lat=90.0, lon=-180.0, gunfire_probability=1.0, radius95_m=25_000.0),
    # fireworks, a late version, times at .999999 (truncated, never rounded up)
    make_incident(
        classification="fireworks",
        version=17,
        event="updated",
        shot_time=SHOT.replace(microsecond=999999),
        published_at=SHOT.replace(microsecond=999999) + timedelta(seconds=2),
    ),
    # probable gunfire, an id using every allowed punctuation
    make_incident(classification="probable_gunfire", incident_id="z.1_a:b-c", version=2),
]


@pytest.mark.parametrize("inc", EDGE_INCIDENTS)
@pytest.mark.parametrize("event", ["created", "updated", "downgraded", "cancelled"])
def test_every_message_validates_against_the_xsd(
    cap_schema: xmlschema.XMLSchema, inc: IncidentRecord, event: str
) -> None:
    previous = (
        make_incident(incident_id=inc.incident_id, version=inc.version - 1)
        if inc.version > 1
        else None
    )
    body = render("cap", inc, event, sender=SENDER, previous=previous).body  # type: ignore[arg-type]
    cap_schema.validate(body.decode("utf-8"))


def test_clip_links_are_resources_and_validate(cap_schema: xmlschema.XMLSchema) -> None:
    clip = {"sensor_id": "s1", "detection_id": "on-a", "sha256": "ab" * 32,
            "url": "https://dispatch.example/v1/clips/s1/on-a.wav?expires=1&sig=00",
            "expires_at": "2026-11-25T02:02:04.250000Z"}
    body = render("cap", make_incident(), "created", sender=SENDER, audio=[clip]).body
    cap_schema.validate(body.decode("utf-8"))
    root = parse(body)
    assert text(root, "cap:info/cap:resource/cap:uri") == clip["url"]
    assert text(root, "cap:info/cap:resource/cap:mimeType") == "audio/wav"
    assert "ab" * 32 in (text(root, "cap:info/cap:resource/cap:resourceDesc") or "")


@pytest.mark.parametrize(
    ("event", "msg_type"),
    [("created", "Alert"), ("updated", "Update"), ("cancelled", "Cancel")],
)
def test_msg_type_and_references(event: str, msg_type: str) -> None:
    prev = make_incident(version=1, published_at=SHOT + timedelta(seconds=1))
    inc = make_incident(version=2, event="updated", published_at=SHOT + timedelta(seconds=9))
    root = parse(render("cap", inc, event, sender=SENDER, previous=prev).body)  # type: ignore[arg-type]
    assert text(root, "cap:msgType") == msg_type
    assert text(root, "cap:identifier") == "shotline-pgh-east:7f3a9c2e1b-v2"
    assert text(root, "cap:sent") == "2026-11-25T01:02:12-00:00"
    assert text(root, "cap:incidents") == inc.incident_id
    refs = text(root, "cap:references")
    if event == "created":
        # an Alert (also a "created" upgrade for a newcomer) references nothing
        assert refs is None
    else:
        # sender,identifier,sent of the message rendered for the previous version
        assert refs == f"{SENDER},shotline-pgh-east:7f3a9c2e1b-v1,2026-11-25T01:02:04-00:00"
        prev_root = parse(render("cap", prev, "created", sender=SENDER).body)
        assert refs.split(",")[1] == text(prev_root, "cap:identifier")
        assert refs.split(",")[2] == text(prev_root, "cap:sent")


def test_info_and_area() -> None:
    inc = make_incident(lat=40.4573, lon=-79.9251, radius95_m=18.5)
    root = parse(render("cap", inc, "created", sender=SENDER).body)
    info = root.find("cap:info", NS)
    assert info is not None
    assert text(info, "cap:category") == "Security"
    assert text(info, "cap:event") == "Gunfire"
    assert text(info, "cap:urgency") == "Immediate"
    assert text(info, "cap:certainty") == "Likely"
    assert text(info, "cap:onset") == "2026-11-25T01:02:03-00:00"
    assert text(info, "cap:eventCode/cap:value") == "SHOOT"
    # circle: "lat,lon radius_km" (lat first, unlike GeoJSON)
    assert text(info, "cap:area/cap:circle") == "40.457300,-79.925100 0.0185"
    params = {
        p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
        for p in info.findall("cap:parameter", NS)
    }
    assert params["shotTime"] == "2026-11-25T01:02:03.123456Z"  # exact time kept here
    assert params["rounds"] == "3"
    assert text(root, "cap:scope") == "Restricted"
    assert text(root, "cap:sender") == SENDER


def test_cancel_is_all_clear() -> None:
    root = parse(render("cap", make_incident(version=2), "cancelled", sender=SENDER).body)
    assert text(root, "cap:info/cap:responseType") == "AllClear"
    assert text(root, "cap:info/cap:urgency") == "Past"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # UTC, fraction truncated, -00:00 instead of Z
        (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-02T03:04:05-00:00"),
        # other offsets are converted to UTC
        (
            datetime(2026, 1, 1, 22, 0, 0, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-02T03:00:00-00:00",
        ),
    ],
)
def test_cap_time(value: datetime, expected: str) -> None:
    assert cap_time(value) == expected


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        # CAP: Likely > ~50 %, Possible <= ~50 %, Unlikely ~ 0
        (1.0, "Likely"),
        (0.51, "Likely"),
        (0.5, "Possible"),
        (0.05, "Possible"),
        (0.049, "Unlikely"),
        (0.0, "Unlikely"),
    ],
)
def test_certainty(p: float, expected: str) -> None:
    assert certainty(p) == expected


def test_the_xsd_bites(cap_schema: xmlschema.XMLSchema) -> None:
    # the validation above is meaningful: a Z time or a fraction is refused by the XSD
    body = render("cap", make_incident(), "created", sender=SENDER).body.decode()
    bad = body.replace("2026-11-25T01:02:04-00:00", "2026-11-25T01:02:04Z", 1)
    assert bad != body
    assert not cap_schema.is_valid(bad)


def test_identifiers_are_per_message_and_references_name_every_earlier_message(
    cap_schema: xmlschema.XMLSchema,
) -> None:
    # One version, two subscribers: two messages, two identifiers (webhook-ids differ).
    inc = make_incident(version=3, event="updated", published_at=SHOT + timedelta(seconds=9))
    to_a = parse(render("cap", inc, "updated", sender=SENDER, message_id="msg_a3").body)
    to_b = parse(render("cap", inc, "created", sender=SENDER, message_id="msg_b3").body)
    assert text(to_a, "cap:identifier") == "shotline-pgh-east:7f3a9c2e1b-v3-msg_a3"
    assert text(to_b, "cap:identifier") == "shotline-pgh-east:7f3a9c2e1b-v3-msg_b3"
    # a Cancel references every earlier message, oldest first, space-separated (CAP 3.2.1)
    refs = [f"{SENDER},shotline-pgh-east:7f3a9c2e1b-v{v}-msg_a{v},t{v}" for v in (1, 2, 3)]
    cancel = render(
        "cap",
        inc.model_copy(update={"version": 4, "event": "cancelled"}),
        "cancelled",
        sender=SENDER,
        message_id="msg_a4",
        references=refs,
    ).body
    cap_schema.validate(cancel.decode("utf-8"))
    assert text(parse(cancel), "cap:references") == " ".join(refs)


def test_a_downgrade_is_a_conspicuous_update(cap_schema: xmlschema.XMLSchema) -> None:
    prev = make_incident(version=1)
    inc = make_incident(
        version=2, event="updated", classification="fireworks", gunfire_probability=0.1
    )
    body = render("cap", inc, "downgraded", sender=SENDER, previous=prev, message_id="m2").body
    cap_schema.validate(body.decode("utf-8"))
    root = parse(body)
    assert text(root, "cap:msgType") == "Update"
    assert text(root, "cap:info/cap:responseType") == "Monitor"
    assert text(root, "cap:info/cap:headline").startswith("DOWNGRADED from gunfire to fireworks")
    assert text(root, "cap:info/cap:description").startswith("DOWNGRADED")
