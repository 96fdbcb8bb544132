"""The documented example messages are current and valid."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson
import pytest

from services.dispatch.formats.examples import EXAMPLES_DIR, example_files
from tests.unit.dispatch import standards

FILES = example_files()


def test_every_format_and_event_has_an_example() -> None:
    assert sorted(FILES) == sorted(
        f"{fmt}-v{v}-{event}.{ext}"
        for fmt, ext in (("json", "json"), ("cap", "xml"), ("eido", "json"))
        for v, event in ((1, "created"), (2, "updated"), (3, "cancelled"))
    )


@pytest.mark.parametrize("name", sorted(FILES))
def test_example_file_is_current(name: str) -> None:
    path = EXAMPLES_DIR / name
    assert path.is_file() and path.read_bytes() == FILES[name], (
        f"{path} is stale: run python -m services.dispatch.formats.examples"
    )


@pytest.mark.parametrize("name", sorted(FILES))
def test_example_is_valid(name: str) -> None:
    content = FILES[name]
    if name.startswith("json-"):
        standards.alert_validator().validate(orjson.loads(content))
    elif name.startswith("eido-"):
        standards.eido_validator().validate(orjson.loads(content))
    else:
        # pretty-printing adds whitespace-only text, which the XSD allows between elements
        standards.cap_schema().validate(ET.fromstring(content))
