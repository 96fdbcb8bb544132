"""Helpers of the oversight tests: the ``shotline`` command in a subprocess, DB snapshots."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncpg

CLI = [sys.executable, "-c", "from services.cli import app; app()"]


async def cli(database_url: str, *args: str, **env: str) -> tuple[int, str, str]:
    """Run ``shotline ARGS`` against the database; (exit code, stdout, stderr)."""
    full_env = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "250", **env}
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every row an import or retention may touch, as text (for before/after equality)."""
    tables = {
        "outcomes": "SELECT * FROM dispatch_incident_outcomes ORDER BY 1, 2",
        "calls": "SELECT call_id, received_at, lat, lon, call_type, coarse FROM oversight_calls "
        "ORDER BY 1",
        "shootings": "SELECT shooting_id, shot_time, lat, lon, source FROM oversight_shootings "
        "ORDER BY 1",
        "incidents": "SELECT incident_id, version, lat, lon, record::text, purged_at "
        "FROM dispatch_incidents ORDER BY 1",
        "versions": "SELECT incident_id, version, record::text FROM dispatch_incident_versions "
        "ORDER BY 1, 2",
        "audit": "SELECT seq, hash FROM audit_log ORDER BY seq",
    }
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in tables.items()}
