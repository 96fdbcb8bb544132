"""The configuration table of the README, generated from the settings classes.

``python -m services.settings_doc`` prints it as Markdown; a test checks the README lists
every variable, so the documentation cannot drift from what the code reads.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings
from services.locator.settings import LocatorSettings
from services.oversight.settings import OversightSettings
from services.sensor.settings import SensorSettings
from shared.settings import CommonSettings, env_name

SETTINGS_CLASSES: tuple[type[CommonSettings], ...] = (
    CommonSettings,
    IngestSettings,
    LocatorSettings,
    DispatchSettings,
    SensorSettings,
    OversightSettings,
)


def _env_name(cls: type[CommonSettings], name: str, field: FieldInfo) -> str:
    return env_name(cls, name)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(generated)"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "unset"
    value = field.default
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    return f"`{value}`"


def _config_comments() -> dict[str, str]:
    """``#:`` comments above each LocatorConfig field: the engine's tuning is documented there,
    and LocatorSettings maps those fields one to one."""
    import inspect
    import re

    from services.locator import config

    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(config).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:\s*[\w\[\], |.]+=", stripped)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        if not stripped.startswith("#"):
            pending = []
    return comments


def rows() -> Iterator[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, common ones once."""
    seen: set[str] = set()
    engine_docs = _config_comments()
    for cls in SETTINGS_CLASSES:
        for name, field in cls.model_fields.items():
            env = _env_name(cls, name, field)
            if env in seen:
                continue
            seen.add(env)
            meaning = field.description or (
                engine_docs.get(name, "") if cls is LocatorSettings else ""
            )
            yield env, _default(field), meaning.replace("|", "/")


def markdown() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{env}` | {default} | {meaning} |" for env, default, meaning in rows()]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(markdown())
