"""A drill's incident (``exercise``) is marked an exercise in every format and channel, and a
real one never is: a CAD rehearses without a real alert going out as real, and the reverse."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson
import pytest

from services.dispatch.formats import render
from services.dispatch.push import push_message
from services.dispatch.routing import same_shot
from tests.unit.dispatch import standards
from tests.unit.dispatch.factories import make_incident

SENDER = "shotline.city.example"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


def _cap(exercise: bool) -> ET.Element:
    body = render("cap", make_incident(exercise=exercise), "created", sender=SENDER).body
    standards.cap_schema().validate(body)
    return ET.fromstring(body)


def test_cap_status_is_exercise_for_a_drill_and_actual_otherwise() -> None:
    drill, real = _cap(True), _cap(False)
    assert drill.findtext(f"{CAP}status") == "Exercise"
    assert "drill" in (drill.findtext(f"{CAP}note") or "")  # CAP 1.2: the exercise id in <note>
    assert "EXERCISE" in drill.findtext(f"{CAP}info/{CAP}description", "")
    assert real.findtext(f"{CAP}status") == "Actual"
    assert real.find(f"{CAP}note") is None
    assert "EXERCISE" not in real.findtext(f"{CAP}info/{CAP}description", "")


@pytest.mark.parametrize("exercise", [True, False])
def test_json_alert_carries_the_flag_and_stays_valid(exercise: bool) -> None:
    body = render("json", make_incident(exercise=exercise), "created", sender=SENDER).body
    document = orjson.loads(body)
    standards.alert_validator().validate(document)
    assert document["data"]["exercise"] is exercise


@pytest.mark.parametrize("exercise", [True, False])
def test_eido_says_exercise_in_its_type_and_notes_and_stays_valid(exercise: bool) -> None:
    document = orjson.loads(
        render("eido", make_incident(exercise=exercise), "created", sender=SENDER).body
    )
    standards.eido_validator().validate(document)
    incident = document["incidentComponent"]
    notes = document["notesComponent"][0]["notesActionComments"]
    assert incident["incidentTypeInternalCode"].startswith("exercise-") is exercise
    assert ("EXERCISE" in incident["incidentTypeInternalText"]) is exercise
    assert ("EXERCISE" in notes) is exercise


def test_an_officers_push_says_exercise_first() -> None:
    drill = push_message(make_incident(exercise=True), "created")
    real = push_message(make_incident(), "created")
    assert drill.title.startswith("EXERCISE") and drill.data["exercise"] == "true"
    assert "EXERCISE" not in real.title and real.data["exercise"] == "false"


def test_a_drill_and_a_real_incident_are_never_the_same_shot() -> None:
    """Otherwise a real alert could be held back as a drill's cross-zone sibling."""
    real = make_incident(zone="zone-a")
    real_other_zone = make_incident(zone="zone-b", incident_id="other")
    drill_other_zone = make_incident(zone="zone-b", incident_id="other", exercise=True)
    assert same_shot(real, real_other_zone, window_s=2.0, distance_m=100.0)
    assert not same_shot(real, drill_other_zone, window_s=2.0, distance_m=100.0)
