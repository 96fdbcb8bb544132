"""Operator mistakes with the oversight commands end in one line naming the problem."""

from __future__ import annotations

from pathlib import Path

from tests.integration.oversight.helpers import cli


async def test_bad_report_arguments_are_one_line_errors(database_url, tmp_path: Path):
    out = str(tmp_path / "r")
    cases = [
        (["--from", "2026-13-01", "--to", "2026-12-01"], "--from/--to must be dates"),
        (["--from", "2026-12-01", "--to", "2026-11-01"], "--to (2026-11-01) is before --from"),
        (["--from", "2026-11-01", "--to", "2026-11-30", "--areas", "beats"], "no areas layer"),
    ]
    for args, message in cases:
        code, _, err = await cli(database_url, "report", *args, "--out", out)
        assert code == 2 and message in err, err
        assert "Traceback" not in err


async def test_a_bad_mapping_or_a_missing_file_is_named(database_url, tmp_path: Path):
    csv = tmp_path / "cad.csv"
    csv.write_text("ID\nx\n")
    mapping = tmp_path / "cad.yml"
    mapping.write_text("columns: {incident: ID}\n")
    code, _, err = await cli(database_url, "outcomes", "import", str(csv), "--map", str(mapping))
    assert code == 2 and "unknown field(s) ['incident']" in err and "cad.yml" in err
    mapping.write_text("columns: {incident_id: ShotlineID}\n")
    code, _, err = await cli(database_url, "outcomes", "import", str(csv), "--map", str(mapping))
    assert code == 2 and "lacks the mapped column(s): incident_id ('ShotlineID')" in err
    code, _, err = await cli(
        database_url, "calls", "import", str(tmp_path / "none.csv"), "--map", str(mapping)
    )
    assert code == 2 and "none.csv" in err


async def test_tokens_are_issued_once_listed_without_secret_and_revoked(database_url):
    code, token, err = await cli(database_url, "tokens", "add", "c.staff", "--role", "analyst")
    assert code == 0 and token.strip().startswith("shl_") and "shown once" in err
    code, listed, _ = await cli(database_url, "tokens", "list")
    assert "c.staff" in listed and token.strip() not in listed
    token_id = token.strip().split("_")[1]
    code, out, _ = await cli(database_url, "tokens", "revoke", token_id)
    assert code == 0 and f"token {token_id} revoked" in out
    code, _, err = await cli(database_url, "tokens", "add", "x", "--role", "root")
    assert code == 2 and "role 'root' is not one of" in err
