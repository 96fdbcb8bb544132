"""Imports of a city's own records: CAD outcomes, 911 "shots fired" calls, verified shootings.

Every city exports differently, so a YAML **mapping file** says which CSV column holds which
field, how times are written, and (for CAD) which dispositions count as confirmed,
unconfirmed or unfounded. Parsing (:func:`parse_outcomes`, :func:`parse_calls`,
:func:`parse_shootings`) is pure: it returns the good rows and a line-numbered error per bad
row. Storing is idempotent: a re-imported row that changed nothing writes nothing (an
outcome row becomes a new outcome version only when its content differs from the
incident's latest version; a call or a shooting is keyed by its own id).

Example mapping for a CAD export (see docs/oversight.md for calls and shootings)::

    columns:
      incident_id: ShotlineID        # required: the alert's incident id as CAD stored it
      cad_event_number: EventNo
      entry_time: Entered
      dispatch_time: Dispatched
      on_scene_time: OnScene
      clear_time: Cleared
      units: Units                   # "1A12;1A14"
      final_call_type: FinalType
      disposition: Dispo
      evidence: Evidence             # codes, see evidence_codes
      report_taken: Report
    time_format: "%m/%d/%Y %H:%M:%S" # default: ISO 8601
    timezone: America/Chicago        # for times without an offset (default UTC)
    finding_from: disposition        # or final_call_type
    findings:
      confirmed: [SHOTS-CONFIRMED, ARR]
      unconfirmed: [GOA, NOEV]
      unfounded: [UNF]
    evidence_codes: {CAS: casings, VIC: victim, WPN: weapon_recovered, ARR: arrest}
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.dispatch import store
from services.oversight import audit
from services.oversight.audit import canonical

EVIDENCE = ("casings", "victim", "witness", "arrest", "weapon_recovered", "none")
FINDINGS = ("confirmed", "unconfirmed", "unfounded")

OUTCOME_FIELDS = (
    "incident_id",
    "cad_event_number",
    "entry_time",
    "dispatch_time",
    "on_scene_time",
    "clear_time",
    "units",
    "initial_priority",
    "final_priority",
    "final_call_type",
    "disposition",
    "evidence",
    "report_taken",
)
CALL_FIELDS = ("call_id", "received_at", "lat", "lon", "call_type")
SHOOTING_FIELDS = ("shooting_id", "shot_time", "lat", "lon", "source")
_TIME_FIELDS = {
    "entry_time",
    "dispatch_time",
    "on_scene_time",
    "clear_time",
    "received_at",
    "shot_time",
}
_REQUIRED = {
    "outcomes": ("incident_id",),
    "calls": ("call_id", "received_at", "lat", "lon"),
    "shootings": ("shooting_id", "shot_time", "lat", "lon"),
}


class Mapping_(BaseModel):
    """A mapping file. Unknown keys are errors (a typo must not silently drop a column)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(description="Shotline field -> CSV column name")
    time_format: str | None = Field(default=None, description="strptime format; None = ISO")
    timezone: str = "UTC"
    units_separator: str = ";"
    finding_from: Literal["disposition", "final_call_type"] = "disposition"
    findings: dict[Literal["confirmed", "unconfirmed", "unfounded"], list[str]] = {}
    evidence_codes: dict[str, str] = {}
    evidence_separator: str = ";"
    true_values: list[str] = ["y", "yes", "true", "1", "x"]
    call_types: list[str] | None = Field(
        default=None, description="Calls: import only these call types (None = every row)"
    )
    source: str = Field(default="", description="Shootings: where they come from, if no column")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. America/Chicago)") from None
        return value

    @field_validator("evidence_codes")
    @classmethod
    def _evidence(cls, value: dict[str, str]) -> dict[str, str]:
        for code, name in value.items():
            if name not in EVIDENCE:
                raise ValueError(f"code {code!r} maps to {name!r}, not one of {EVIDENCE}")
        return value


def load_mapping(path: Path, kind: Literal["outcomes", "calls", "shootings"]) -> Mapping_:
    """Read and check a mapping file; ValueError naming the file and the key on a problem."""
    try:
        # Every scalar as written: a column called No or On is not a boolean, 0101 not a number
        raw = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a mapping file is a YAML mapping with a 'columns' key")
    try:
        mapping = Mapping_.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from None
    allowed = {"outcomes": OUTCOME_FIELDS, "calls": CALL_FIELDS, "shootings": SHOOTING_FIELDS}[kind]
    unknown = sorted(set(mapping.columns) - set(allowed))
    if unknown:
        raise ValueError(f"{path}: columns: unknown field(s) {unknown}; known: {list(allowed)}")
    missing = [f for f in _REQUIRED[kind] if f not in mapping.columns]
    if missing:
        raise ValueError(f"{path}: columns: required field(s) {missing} are not mapped")
    return mapping


@dataclass
class Parsed:
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, values)
    errors: list[str] = field(default_factory=list)


class _RowError(ValueError):
    pass


def _time(value: str, mapping: Mapping_, name: str) -> datetime:
    try:
        if mapping.time_format:
            parsed = datetime.strptime(value, mapping.time_format)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        expected = mapping.time_format or "ISO 8601"
        raise _RowError(f"{name}: {value!r} is not a time in {expected}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(mapping.timezone))
    return parsed.astimezone(UTC)


def _float(value: str, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise _RowError(f"{name}: {value!r} is not a number") from None
    if not low <= number <= high:
        raise _RowError(f"{name}: {number} is outside [{low}, {high}]")
    return number


def _read_csv(text: str, mapping: Mapping_, parsed: Parsed) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    absent = [f"{k} ({v!r})" for k, v in mapping.columns.items() if v not in header]
    if absent:
        raise ValueError(f"the CSV header lacks the mapped column(s): {', '.join(absent)}")
    out = []
    for raw in reader:
        line = reader.line_num
        values = {k: (raw.get(col) or "").strip() for k, col in mapping.columns.items()}
        out.append((line, values))
    return out


def _parse(text: str, mapping: Mapping_, kind: str, convert: Any) -> Parsed:
    parsed = Parsed()
    for line, values in _read_csv(text, mapping, parsed):
        try:
            for name in _REQUIRED[kind]:
                if not values.get(name):
                    raise _RowError(f"{name} ({mapping.columns[name]!r}) is empty")
            row = convert(values, mapping)
        except _RowError as exc:
            parsed.errors.append(f"line {line}: {exc}")
            continue
        if row is not None:
            parsed.rows.append((line, row))
    return parsed


def _outcome_row(values: Mapping[str, str], mapping: Mapping_) -> dict[str, Any]:
    row: dict[str, Any] = {"incident_id": values["incident_id"]}
    for name in ("entry_time", "dispatch_time", "on_scene_time", "clear_time"):
        row[name] = _time(values[name], mapping, name) if values.get(name) else None
    order = [n for n in ("entry_time", "dispatch_time", "on_scene_time", "clear_time") if row[n]]
    for a, b in itertools.pairwise(order):
        if row[b] < row[a]:
            raise _RowError(f"{b} ({values[b]}) is before {a} ({values[a]})")
    row["units"] = sorted(
        u.strip() for u in values.get("units", "").split(mapping.units_separator) if u.strip()
    )
    for name in ("cad_event_number", "initial_priority", "final_priority", "final_call_type"):
        row[name] = values.get(name) or None
    row["disposition"] = values.get("disposition", "")
    code = (values.get(mapping.finding_from) or "").strip()
    row["finding"] = None
    for finding, codes in mapping.findings.items():
        if code.upper() in {c.upper() for c in codes}:
            row["finding"] = finding
    if code and row["finding"] is None and mapping.findings:
        raise _RowError(
            f"{mapping.finding_from}: {code!r} is in none of the mapping's findings "
            "(add it under confirmed, unconfirmed or unfounded)"
        )
    evidence = set()
    for item in values.get("evidence", "").split(mapping.evidence_separator):
        item = item.strip()
        if not item:
            continue
        name = mapping.evidence_codes.get(item, item.lower())
        if name not in EVIDENCE:
            raise _RowError(f"evidence: {item!r} is not a known code or one of {EVIDENCE}")
        evidence.add(name)
    if "none" in evidence and len(evidence) > 1:
        raise _RowError("evidence: 'none' cannot be combined with other evidence")
    row["evidence"] = sorted(evidence) or ["none"]
    row["report_taken"] = values.get("report_taken", "").lower() in {
        v.lower() for v in mapping.true_values
    }
    return row


def _call_row(values: Mapping[str, str], mapping: Mapping_) -> dict[str, Any] | None:
    call_type = values.get("call_type", "")
    if mapping.call_types is not None and call_type.upper() not in {
        c.upper() for c in mapping.call_types
    }:
        return None  # not a shots-fired call: not an error
    return {
        "call_id": values["call_id"],
        "received_at": _time(values["received_at"], mapping, "received_at"),
        "lat": _float(values["lat"], "lat", -90, 90),
        "lon": _float(values["lon"], "lon", -180, 180),
        "call_type": call_type,
    }


def _shooting_row(values: Mapping[str, str], mapping: Mapping_) -> dict[str, Any]:
    return {
        "shooting_id": values["shooting_id"],
        "shot_time": _time(values["shot_time"], mapping, "shot_time"),
        "lat": _float(values["lat"], "lat", -90, 90),
        "lon": _float(values["lon"], "lon", -180, 180),
        "source": values.get("source") or mapping.source,
    }


def parse_outcomes(text: str, mapping: Mapping_) -> Parsed:
    return _parse(text, mapping, "outcomes", _outcome_row)


def parse_calls(text: str, mapping: Mapping_) -> Parsed:
    return _parse(text, mapping, "calls", _call_row)


def parse_shootings(text: str, mapping: Mapping_) -> Parsed:
    return _parse(text, mapping, "shootings", _shooting_row)


def outcome_key(row: Mapping[str, Any]) -> str:
    """Content hash of an outcome: equal for a row re-imported unchanged."""
    return hashlib.sha256(canonical({k: row.get(k) for k in OUTCOME_FIELDS}).encode()).hexdigest()


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self, what: str) -> str:
        return (
            f"{what}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{len(self.errors)} bad row(s)"
        )


async def store_outcomes(
    pool: asyncpg.Pool, parsed: Parsed, *, source_name: str, actor: audit.Actor, now: datetime
) -> ImportResult:
    """Each row becomes the incident's next outcome version unless a version holds it."""
    result = ImportResult(errors=list(parsed.errors))
    async with pool.acquire() as conn, conn.transaction():
        for line, row in parsed.rows:
            key = outcome_key(row)
            exists = await conn.fetchval(
                "SELECT 1 FROM dispatch_incidents WHERE incident_id = $1 FOR UPDATE",
                row["incident_id"],
            )
            if not exists:
                result.errors.append(f"line {line}: incident_id {row['incident_id']!r} is unknown")
                continue
            # Any version with this content (not only the latest): re-importing a file
            # changes nothing even after the API recorded a newer outcome meanwhile.
            seen = await conn.fetchval(
                "SELECT 1 FROM dispatch_incident_outcomes WHERE incident_id = $1 "
                "AND import_key = $2",
                row["incident_id"],
                key,
            )
            if seen:
                result.unchanged += 1
                continue
            await store.insert_outcome_version(conn, row, source="cad", import_key=key)
            result.added += 1
        if result.added:
            await audit.append(
                conn,
                actor,
                "outcomes.import",
                source_name,
                {
                    "added": result.added,
                    "unchanged": result.unchanged,
                    "bad_rows": len(result.errors),
                },
                at=now,
            )
    result.errors.sort(key=_line_of)
    return result


def _line_of(message: str) -> int:
    head = message.split(":", 1)[0]
    return int(head.removeprefix("line ")) if head.startswith("line ") else 0


async def store_calls(
    pool: asyncpg.Pool, parsed: Parsed, *, source_name: str, actor: audit.Actor, now: datetime
) -> ImportResult:
    result = ImportResult(errors=list(parsed.errors))
    async with pool.acquire() as conn, conn.transaction():
        for _, row in parsed.rows:
            status = await conn.fetchval(
                """INSERT INTO oversight_calls AS c (call_id, received_at, lat, lon, call_type)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (call_id) DO UPDATE SET
                     received_at = EXCLUDED.received_at, lat = EXCLUDED.lat,
                     lon = EXCLUDED.lon, call_type = EXCLUDED.call_type, coarse = false
                   WHERE NOT c.coarse AND (c.received_at, c.lat, c.lon, c.call_type)
                         IS DISTINCT FROM (EXCLUDED.received_at, EXCLUDED.lat, EXCLUDED.lon,
                                           EXCLUDED.call_type)
                   RETURNING (xmax = 0)""",
                row["call_id"],
                row["received_at"],
                row["lat"],
                row["lon"],
                row["call_type"],
            )
            if status is None:
                result.unchanged += 1
            elif status:
                result.added += 1
            else:
                result.updated += 1
        if result.added or result.updated:
            await audit.append(
                conn,
                actor,
                "calls.import",
                source_name,
                {"added": result.added, "updated": result.updated, "bad_rows": len(result.errors)},
                at=now,
            )
    return result


async def store_shootings(
    pool: asyncpg.Pool, parsed: Parsed, *, source_name: str, actor: audit.Actor, now: datetime
) -> ImportResult:
    result = ImportResult(errors=list(parsed.errors))
    async with pool.acquire() as conn, conn.transaction():
        for _, row in parsed.rows:
            status = await conn.fetchval(
                """INSERT INTO oversight_shootings AS s (shooting_id, shot_time, lat, lon, source)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (shooting_id) DO UPDATE SET
                     shot_time = EXCLUDED.shot_time, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                     source = EXCLUDED.source
                   WHERE (s.shot_time, s.lat, s.lon, s.source)
                         IS DISTINCT FROM (EXCLUDED.shot_time, EXCLUDED.lat, EXCLUDED.lon,
                                           EXCLUDED.source)
                   RETURNING (xmax = 0)""",
                row["shooting_id"],
                row["shot_time"],
                row["lat"],
                row["lon"],
                row["source"],
            )
            if status is None:
                result.unchanged += 1
            elif status:
                result.added += 1
            else:
                result.updated += 1
        if result.added or result.updated:
            await audit.append(
                conn,
                actor,
                "shootings.import",
                source_name,
                {"added": result.added, "updated": result.updated, "bad_rows": len(result.errors)},
                at=now,
            )
    return result
