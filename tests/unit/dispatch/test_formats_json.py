"""Native JSON alerts validate against services/dispatch/schemas/alert.schema.json."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from services.dispatch.formats import render
from services.dispatch.formats.json import SCHEMA_PATH, alert_schema
from shared.schemas import IncidentRecord
from tests.unit.dispatch import standards
from tests.unit.dispatch.factories import SHOT, make_incident

SENDER = "shotline.city.example"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return standards.alert_validator()


EDGE_INCIDENTS = [
    # a typical first version
    make_incident(),
    # extreme coordinates, zero radius, probability 0, one round, no sensors
    make_incident(
        lat=-90.0,
        lon=180.0,
        radius95_m=0.0,
        gunfire_probability=0.0,
        rounds=1,
        sensor_count=0,
        classification="other",
    ),
    make_incident(lat=90.0, lon=-180.0, gunfire_probability=1.0, classification="fireworks"),
    # with the 95 % ellipse (orientation unknown)
    make_incident(
        location={
            "lat": 40.0,
            "lon": -80.0,
            "radius95_m": 30.0,
            "semi_major_m": 30.0,
            "semi_minor_m": 9.5,
        }
    ),
    # microseconds at the edge
    make_incident(
        shot_time=SHOT.replace(microsecond=999999),
        version=40,
        event="updated",
        classification="probable_gunfire",
    ),
]


@pytest.mark.parametrize("inc", EDGE_INCIDENTS)
@pytest.mark.parametrize("event", ["created", "updated", "downgraded", "cancelled"])
def test_every_message_validates(
    validator: Draft202012Validator, inc: IncidentRecord, event: str
) -> None:
    previous = make_incident(version=inc.version - 1) if inc.version > 1 else None
    body = render("json", inc, event, sender=SENDER, previous=previous).body  # type: ignore[arg-type]
    validator.validate(orjson.loads(body))


def test_fields_carry_the_incident() -> None:
    inc = make_incident(version=3, event="updated")
    doc = orjson.loads(
        render("json", inc, "created", sender=SENDER, previous=make_incident(version=2)).body
    )
    data = doc["data"]
    assert doc["type"] == "incident.created"  # the delivery event, not the record's
    assert doc["timestamp"] == data["published_at"] == "2026-11-25T01:02:04.223456Z"
    assert data["incident_id"] == inc.incident_id
    assert (data["version"], data["previous_version"]) == (3, 2)
    assert data["location"] == {
        "lat": inc.location.lat,
        "lon": inc.location.lon,
        "radius95_m": 18.5,
    }
    assert data["shot_time"] == "2026-11-25T01:02:03.123456Z"
    assert data["detection_received_at"] == "2026-11-25T01:02:03.423456Z"
    assert (data["rounds"], data["sensor_count"], data["zone"]) == (3, 6, "pgh-east")
    assert (data["classification"], data["gunfire_probability"]) == ("gunfire", 0.97)


def test_schema_examples_validate(validator: Draft202012Validator) -> None:
    examples = validator.schema["examples"]
    assert len(examples) >= 2
    for example in examples:
        validator.validate(example)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        # the schema bites: wrong event, out-of-range coordinates, missing radius, bad time
        (("type",), "incident.deleted"),
        (("data", "location", "lat"), 91),
        (("data", "location"), {"lat": 1, "lon": 2}),
        (("data", "shot_time"), "2026-11-25 01:02:03"),
    ],
)
def test_schema_rejects_wrong_messages(
    validator: Draft202012Validator, path: tuple[str, ...], value: Any
) -> None:
    doc = orjson.loads(render("json", make_incident(), "created", sender=SENDER).body)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        validator.validate(doc)


@pytest.mark.parametrize("path", [(), ("data",), ("data", "location")])
def test_schema_accepts_added_fields_as_its_text_promises(
    validator: Draft202012Validator, path: tuple[str, ...]
) -> None:
    # "Later schema versions may add fields: ignore what you do not know."
    doc = orjson.loads(render("json", make_incident(), "created", sender=SENDER).body)
    target = doc
    for key in path:
        target = target[key]
    target["added_in_a_later_version"] = {"any": 1}
    validator.validate(doc)


def test_alert_schema_is_the_shipped_file_and_a_private_copy() -> None:
    schema = alert_schema()
    assert schema == orjson.loads(SCHEMA_PATH.read_bytes())
    schema["examples"].clear()  # the API may rewrite it; the next caller is unaffected
    assert alert_schema()["examples"]
