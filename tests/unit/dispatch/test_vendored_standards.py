"""The vendored schemas are the official ones, and each carries its licence note."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_KIT
from tests.unit.dispatch.standards import STANDARDS

VENDORED = sorted(p for p in STANDARDS.rglob("*") if p.is_file() and p.name != "README.md")


def test_every_vendored_file_has_its_source_and_licence_in_the_readme() -> None:
    notes = (STANDARDS / "README.md").read_text()
    assert VENDORED, "the schemas are vendored"
    for path in VENDORED:
        assert f"`{path.name}`" in notes, path


@pytest.mark.parametrize("path", VENDORED, ids=lambda p: p.name)
def test_a_vendored_file_is_byte_for_byte_the_kits(path) -> None:
    original = SHARED_KIT / "standards" / path.relative_to(STANDARDS)
    if not original.is_file():
        pytest.skip(f"the kit is not at {SHARED_KIT}: nothing to compare with")
    assert path.read_bytes() == original.read_bytes()
