"""Making a report from a database: read the rows in one snapshot, compute, write."""

from __future__ import annotations

from datetime import date
from importlib import metadata
from pathlib import Path

import asyncpg

from services.oversight import records
from services.oversight.render import write_report
from services.oversight.report import Params, build_report
from services.oversight.settings import OversightSettings


def shotline_version() -> str:
    try:
        return metadata.version("shotline")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "unknown"


def report_params(start: date, end: date, areas: str | None, settings: OversightSettings) -> Params:
    if end < start:
        raise ValueError(f"--to ({end}) is before --from ({start})")
    return Params(
        start=start,
        end=end,
        area_layer=areas,
        cell_m=settings.cell_m,
        min_cell_count=settings.min_cell_count,
        match_distance_m=settings.match_distance_m,
        match_window_s=settings.match_window_s,
        shooting_window_s=settings.shooting_window_s,
        located_within_m=settings.located_within_m,
        latency_target_s=settings.latency_target_s,
    )


async def make_report(pool: asyncpg.Pool, params: Params, out_dir: Path) -> dict[str, Path]:
    """Read, compute, write: the whole ``shotline report``."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        inputs = await records.read_inputs(conn, params)
    report = build_report(inputs, params, version=shotline_version())
    return write_report(report, out_dir, areas=inputs.areas)
