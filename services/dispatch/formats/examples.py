"""Example messages of every format, for documentation (``schemas/examples/``).

``python -m services.dispatch.formats.examples [DIR]`` (re)writes them from
:func:`example_sequence` - one incident created, updated (more rounds, better fix) and
cancelled (reclassified as fireworks). A unit test checks the files are current.
"""

from __future__ import annotations

import sys
import xml.dom.minidom
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from services.dispatch.formats import render
from services.dispatch.formats.cap import reference
from services.dispatch.signing import webhook_id
from shared.schemas import IncidentRecord

EXAMPLE_SENDER = "shotline.city.example"
#: The subscription the examples are sent to (CAP identifiers are per message).
EXAMPLE_SUBSCRIPTION = "sub_0123456789abcdef"
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "schemas" / "examples"
_EXTENSIONS = {"json": "json", "cap": "xml", "eido": "json"}


def example_sequence() -> list[tuple[IncidentRecord, IncidentRecord | None]]:
    """(version, previous version) of one incident's life: created, updated, cancelled."""
    shot = datetime(2026, 11, 25, 1, 2, 3, 123456, tzinfo=UTC)
    first = IncidentRecord(
        incident_id="pgh-east:7f3a9c2e1b",
        version=1,
        event="created",
        zone="pgh-east",
        classification="gunfire",
        gunfire_probability=0.93,
        rounds=3,
        shot_time=shot,
        last_shot_time=shot + timedelta(seconds=0.8),
        location={"lat": 40.457321, "lon": -79.925112, "radius95_m": 24.0},
        sensor_count=5,
        first_detection_received_at=shot + timedelta(seconds=0.31),
        published_at=shot + timedelta(seconds=1.1),
    )
    second = first.model_copy(
        update={
            "version": 2,
            "event": "updated",
            "gunfire_probability": 0.97,
            "rounds": 5,
            "last_shot_time": shot + timedelta(seconds=2.4),
            "location": first.location.model_copy(update={"radius95_m": 15.5}),
            "sensor_count": 7,
            "published_at": shot + timedelta(seconds=3.0),
        }
    )
    third = second.model_copy(
        update={
            "version": 3,
            "event": "cancelled",
            "classification": "fireworks",
            "gunfire_probability": 0.04,
            "published_at": shot + timedelta(minutes=4),
        }
    )
    return [(first, None), (second, first), (third, second)]


def _pretty(fmt: str, body: bytes) -> bytes:
    if fmt == "cap":
        return xml.dom.minidom.parseString(body).toprettyxml(indent="  ", encoding="utf-8")
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) + b"\n"


def example_files() -> dict[str, bytes]:
    """File name -> pretty-printed content, for every format and event."""
    files = {}
    references: list[str] = []  # CAP: every earlier message to this subscriber
    for incident, previous in example_sequence():
        message_id = webhook_id(EXAMPLE_SUBSCRIPTION, incident.incident_id, incident.version)
        for fmt in ("json", "cap", "eido"):
            body = render(
                fmt,  # type: ignore[arg-type]
                incident,
                incident.event,
                sender=EXAMPLE_SENDER,
                previous=previous,
                message_id=message_id,
                references=references,
            )
            name = f"{fmt}-v{incident.version}-{incident.event}.{_EXTENSIONS[fmt]}"
            files[name] = _pretty(fmt, body.body)
        references = [*references, reference(EXAMPLE_SENDER, incident, message_id)]
    return files


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else EXAMPLES_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, content in example_files().items():
        (target / name).write_bytes(content)
    print(f"wrote {len(example_files())} examples to {target}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv))
