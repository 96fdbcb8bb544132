"""The commission's commands: imports, the report, retention, the audit log, API tokens.

* ``shotline outcomes import cad.csv --map mapping.yml`` (and ``calls``, ``shootings``):
  bad rows are reported by line on stderr, the rest is imported; exit 1 if any row was bad;
* ``shotline report --from DATE --to DATE [--areas LAYER] --out DIR``;
* ``shotline retention run``; ``shotline audit verify`` / ``audit list``;
* ``shotline tokens add USER --role ROLE`` / ``tokens list`` / ``tokens revoke ID``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from services.oversight import audit, imports, tokens
from services.oversight.generate import make_report, report_params
from services.oversight.retention import run_retention
from services.oversight.settings import OversightSettings
from shared.cli import err, fail, operator_errors
from shared.clock import utc_now
from shared.runtime import with_database

out = Console()

outcomes_app = typer.Typer(
    help="Outcomes written back by the dispatch centre (CAD).", no_args_is_help=True
)
calls_app = typer.Typer(help="911 'shots fired' calls for service.", no_args_is_help=True)
shootings_app = typer.Typer(
    help="Verified shootings (RMS, live-fire tests, ME).", no_args_is_help=True
)
retention_app = typer.Typer(
    help="Deleting detections and exact locations when due.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
tokens_app = typer.Typer(help="Per-user API tokens with roles.", no_args_is_help=True)


def with_pool(action: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    return with_database(action, OversightSettings())


def _import(kind: str, path: Path, mapping_path: Path) -> None:
    mapping = imports.load_mapping(mapping_path, kind)  # type: ignore[arg-type]
    text = path.read_text(encoding="utf-8-sig")
    parse = {
        "outcomes": imports.parse_outcomes,
        "calls": imports.parse_calls,
        "shootings": imports.parse_shootings,
    }[kind]
    store = {
        "outcomes": imports.store_outcomes,
        "calls": imports.store_calls,
        "shootings": imports.store_shootings,
    }[kind]
    parsed = parse(text, mapping)

    async def _go(pool: asyncpg.Pool) -> imports.ImportResult:
        return await store(pool, parsed, source_name=path.name, actor=audit.CLI, now=utc_now())

    result = with_pool(_go)
    for problem in result.errors:
        err.print(f"{path}: {problem}", markup=False, highlight=False)
    out.print(result.summary(f"{kind} from {path.name}"))
    if result.errors:
        raise typer.Exit(1)


FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export")]
MapOpt = Annotated[
    Path, typer.Option("--map", exists=True, dir_okay=False, help="YAML column mapping")
]


@outcomes_app.command("import")
@operator_errors
def outcomes_import(path: FileArg, mapping: MapOpt) -> None:
    """Import a CAD export: each changed row becomes the incident's next outcome version."""
    _import("outcomes", path, mapping)


@calls_app.command("import")
@operator_errors
def calls_import(path: FileArg, mapping: MapOpt) -> None:
    """Import 911 'shots fired' calls (keyed by call id; re-importing changes nothing)."""
    _import("calls", path, mapping)


@shootings_app.command("import")
@operator_errors
def shootings_import(path: FileArg, mapping: MapOpt) -> None:
    """Import verified shootings with position (keyed by their id)."""
    _import("shootings", path, mapping)


def report(
    start: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC)")],
    end: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD (UTC, inclusive)")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for report.html/.json/CSVs")],
    areas: Annotated[str | None, typer.Option("--areas", help="Areas layer name")] = None,
) -> None:
    """Write the oversight report: report.html, report.json and one CSV per table."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise fail(f"--from/--to must be dates YYYY-MM-DD: {exc}") from None
    settings = OversightSettings()
    params = report_params(first, last, areas, settings)

    async def _go(pool: asyncpg.Pool) -> dict[str, Path]:
        return await make_report(pool, params, out_dir)

    written = with_pool(_go)
    out.print(f"wrote {len(written)} files to {out_dir}")


report_command = operator_errors(report)


@retention_app.command("run")
@operator_errors
def retention_run() -> None:
    """Delete detections and exact locations older than SHOTLINE_OVERSIGHT_RETENTION_DAYS."""
    settings = OversightSettings()

    async def _go(pool: asyncpg.Pool) -> Any:
        return await run_retention(
            pool,
            now=utc_now(),
            retention_days=settings.retention_days,
            cell_m=settings.cell_m,
            actor=audit.CLI,
        )

    result = with_pool(_go)
    out.print(
        f"retention (older than {result.cutoff.isoformat()}): "
        f"{result.incidents_coarsened} incidents coarsened, {result.versions_redacted} "
        f"versions redacted, {result.detections_deleted} detections deleted, "
        f"{result.attempts_deleted} delivery attempts deleted, {result.calls_coarsened} "
        "911 calls coarsened"
    )


@audit_app.command("verify")
@operator_errors
def audit_verify() -> None:
    """Recompute the hash chain; name the first edited, inserted or deleted row (exit 1)."""
    verdict = with_pool(audit.verify)
    if verdict.ok:
        out.print(f"audit log intact: {verdict.rows} rows, head {verdict.head_hash}")
        return
    err.print(
        f"audit log BROKEN at row {verdict.first_bad_seq}: {verdict.problem}",
        markup=False,
        highlight=False,
    )
    raise typer.Exit(1)


@audit_app.command("list")
@operator_errors
def audit_list(
    after: Annotated[int, typer.Option(help="Rows after this seq")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
) -> None:
    """Print audit rows, oldest first."""

    async def _go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await audit.list_rows(pool, after_seq=after, limit=limit)

    table = Table("seq", "at", "actor", "role", "action", "target", "detail")
    for r in with_pool(_go):
        table.add_row(
            str(r["seq"]),
            r["at"],
            r["actor"],
            r["role"],
            r["action"],
            r["target"],
            audit.canonical(r["detail"]),
        )
    out.print(table)


@tokens_app.command("add")
@operator_errors
def tokens_add(
    user: Annotated[str, typer.Argument(help="Who holds it (name or e-mail)")],
    role: Annotated[str, typer.Option(help=f"One of {', '.join(tokens.ROLES)}")],
) -> None:
    """Issue an API token for a user and a role; it is printed only this once."""

    async def _go(pool: asyncpg.Pool) -> tuple[tokens.TokenRow, str]:
        return await tokens.create_token(pool, user, role, actor=audit.CLI, now=utc_now())

    row, token = with_pool(_go)
    err.print(f"token {row.token_id} for {row.user_name} ({row.role}); shown once:")
    print(token)


@tokens_app.command("list")
@operator_errors
def tokens_list() -> None:
    """List tokens (never their secrets)."""
    table = Table("id", "user", "role", "created", "revoked", "last used")
    for t in with_pool(tokens.list_tokens):
        table.add_row(
            t.token_id,
            t.user_name,
            t.role,
            t.created_at.isoformat(),
            t.revoked_at.isoformat() if t.revoked_at else "",
            t.last_used_at.isoformat() if t.last_used_at else "never",
        )
    out.print(table)


@tokens_app.command("revoke")
@operator_errors
def tokens_revoke(token_id: str) -> None:
    """Revoke a token: its next request is refused (401)."""

    async def _go(pool: asyncpg.Pool) -> tokens.TokenRow | None:
        return await tokens.revoke_token(pool, token_id, actor=audit.CLI, now=utc_now())

    if with_pool(_go) is None:
        raise fail(f"token {token_id} not found")
    out.print(f"token {token_id} revoked")


def mount(app: typer.Typer) -> None:
    """Add the oversight commands to the ``shotline`` app."""
    app.add_typer(outcomes_app, name="outcomes")
    app.add_typer(calls_app, name="calls")
    app.add_typer(shootings_app, name="shootings")
    app.add_typer(retention_app, name="retention")
    app.add_typer(audit_app, name="audit")
    app.add_typer(tokens_app, name="tokens")
    app.command("report")(report_command)
