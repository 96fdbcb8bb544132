"""render(): one entry point for every format; deterministic; checks its arguments."""

from __future__ import annotations

from typing import Any

import pytest

from services.dispatch.formats import render
from tests.unit.dispatch.factories import make_incident

SENDER = "shotline.city.example"


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("json", "application/json"),
        ("cap", "application/common-alerting-protocol+xml"),
        ("eido", "application/json"),
    ],
)
def test_render_is_deterministic(fmt: str, content_type: str) -> None:
    # every retry must carry byte-identical bodies (only signature headers change)
    inc = make_incident(version=2, event="updated")
    prev = make_incident()
    a = render(fmt, inc, "updated", sender=SENDER, previous=prev)  # type: ignore[arg-type]
    b = render(fmt, inc, "updated", sender=SENDER, previous=prev)  # type: ignore[arg-type]
    assert a == b
    assert a.content_type == content_type
    a.body.decode("utf-8")  # UTF-8, so signing works
    # also a plain (content_type, body) pair
    got_type, got_body = a
    assert (got_type, got_body) == (content_type, b.body)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        # unknown format
        ({"fmt": "xml"}, "format"),
        # unknown event
        ({"event": "deleted"}, "event"),
        # CAP forbids spaces and commas in sender
        ({"sender": "Shotline City"}, "sender"),
        ({"sender": ""}, "sender"),
        ({"sender": "a&b.example"}, "sender"),
        # previous must be an earlier version of the same incident
        ({"previous": make_incident(incident_id="other")}, "previous"),
        ({"previous": make_incident(version=5)}, "previous"),
    ],
)
def test_render_rejects_bad_arguments(args: dict[str, Any], problem: str) -> None:
    call: dict[str, Any] = {
        "fmt": "cap",
        "event": "updated",
        "sender": SENDER,
        "previous": None,
    } | args
    inc = make_incident(version=2, event="updated")
    with pytest.raises(ValueError, match=problem):
        render(call["fmt"], inc, call["event"], sender=call["sender"], previous=call["previous"])
