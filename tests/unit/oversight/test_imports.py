"""Parsing the city's exports: the mapping file, bad rows by line, codes, time zones."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.oversight import imports
from services.oversight.imports import load_mapping, parse_calls, parse_outcomes


def _mapping(tmp_path: Path, text: str, kind: str = "outcomes") -> imports.Mapping_:
    path = tmp_path / "map.yml"
    path.write_text(text)
    return load_mapping(path, kind)  # type: ignore[arg-type]


BASE = """\
columns: {incident_id: ID, dispatch_time: Disp, disposition: Dispo, evidence: Ev, units: U}
time_format: "%m/%d/%Y %H:%M"
timezone: America/Chicago
findings: {confirmed: [SHOTS], unconfirmed: [GOA], unfounded: [UNF]}
evidence_codes: {CAS: casings, WPN: weapon_recovered}
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("columns: {ID: incident_id}\n", "unknown field(s) ['ID']"),  # reversed mapping
        # "No" stays a column name (not YAML's false): the problem is the missing id
        ("columns: {cad_event_number: No}\n", "required field(s) ['incident_id']"),
        ("columns: {incident_id: ID}\ntimezone: Mars/Olympus\n", "unknown time zone"),
        ("columns: {incident_id: ID}\nfindngs: {}\n", "findngs"),  # a typo is not ignored
        ("columns: {incident_id: ID}\nevidence_codes: {X: gun}\n", "maps to 'gun'"),
        ("- just a list\n", "a YAML mapping"),
    ],
)
def test_a_bad_mapping_file_is_an_error_naming_the_file_and_the_key(tmp_path, text, problem):
    with pytest.raises(ValueError, match=r"map\.yml") as caught:
        _mapping(tmp_path, text)
    assert problem in str(caught.value)


def test_rows_are_parsed_with_the_citys_codes_and_its_time_zone(tmp_path):
    mapping = _mapping(tmp_path, BASE)
    csv = (
        "ID,Disp,Dispo,Ev,U\n"
        "inc-1,11/03/2026 09:05,SHOTS,CAS;WPN,2A;1B\n"  # 09:05 CST = 15:05 UTC
        "inc-2,11/03/2026 09:05,GOA,,\n"
    )
    parsed = parse_outcomes(csv, mapping)
    assert parsed.errors == []
    (_, first), (_, second) = parsed.rows
    assert first["dispatch_time"] == datetime(2026, 11, 3, 15, 5, tzinfo=UTC)
    assert first["finding"] == "confirmed"
    assert first["evidence"] == ["casings", "weapon_recovered"]
    assert first["units"] == ["1B", "2A"]  # sorted: the content hash ignores their order
    assert second["finding"] == "unconfirmed" and second["evidence"] == ["none"]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("inc-3,yesterday,SHOTS,,", "line 2: dispatch_time: 'yesterday' is not a time"),
        (",11/03/2026 09:05,SHOTS,,", "line 2: incident_id ('ID') is empty"),
        ("inc-3,,ZZZ,,", "line 2: disposition: 'ZZZ' is in none of the mapping's findings"),
        ("inc-3,,SHOTS,GUN,", "line 2: evidence: 'GUN' is not a known code"),
        ("inc-3,,SHOTS,none;CAS,", "line 2: evidence: 'none' cannot be combined"),
    ],
)
def test_a_bad_row_is_named_by_its_line_and_the_others_are_kept(tmp_path, row, error):
    mapping = _mapping(tmp_path, BASE)
    parsed = parse_outcomes(f"ID,Disp,Dispo,Ev,U\n{row}\ninc-9,,GOA,,\n", mapping)
    assert len(parsed.errors) == 1 and parsed.errors[0].startswith(error), parsed.errors
    assert [r["incident_id"] for _, r in parsed.rows] == ["inc-9"]  # line 3 still imported


def test_a_csv_without_a_mapped_column_is_refused_whole(tmp_path):
    mapping = _mapping(tmp_path, BASE)
    with pytest.raises(ValueError, match="lacks the mapped column"):
        parse_outcomes("ID,Disp\ninc-1,\n", mapping)


def test_calls_of_other_types_are_skipped_not_errors(tmp_path):
    mapping = _mapping(
        tmp_path,
        "columns: {call_id: N, received_at: T, lat: Y, lon: X, call_type: K}\n"
        "call_types: [SHOTS FIRED]\n",
        "calls",
    )
    parsed = parse_calls(
        "N,T,Y,X,K\n"
        "1,2026-11-03T15:00:00Z,40.44,-79.99,shots fired\n"
        "2,2026-11-03T15:00:00Z,40.44,-79.99,NOISE\n"
        "3,2026-11-03T15:00:00Z,95,-79.99,SHOTS FIRED\n",
        mapping,
    )
    assert [r["call_id"] for _, r in parsed.rows] == ["1"]
    assert parsed.errors == ["line 4: lat: 95.0 is outside [-90, 90]"]
