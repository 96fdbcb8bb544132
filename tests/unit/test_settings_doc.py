"""The README's configuration table lists every variable the services read, with a meaning."""

from __future__ import annotations

from pathlib import Path

from services.settings_doc import rows

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [env for env, _, _ in rows() if f"`{env}`" not in README]
    assert missing == [], "run `python -m services.settings_doc` and update the README"


def test_every_setting_says_what_it_means() -> None:
    assert [env for env, _, meaning in rows() if not meaning.strip()] == []
