"""Retention: detections and exact locations older than the retention age are deleted.

What a run does, in one transaction, for incidents whose first round is older than the
cutoff (and that no pending delivery still needs):

* every stored version's record loses its detections (``round_details`` with their
  sensor pulse keys and per-round positions, ``sensors_used``/``sensors_rejected``,
  residuals) and its exact location, which becomes the centre of its public grid cell
  (:func:`services.oversight.report.coarse_cell`); dispatch's place words are dropped;
* the incident row keeps its class, rounds, times and the coarse cell (the report's
  aggregates outlive the raw rows) and is marked ``purged_at``;
* delivery attempts older than the cutoff are deleted; 911 calls older than the cutoff
  are coarsened the same way.

What was removed is counted in ``retention_runs`` and in the audit log (which itself is
never purged).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from services.oversight import audit
from services.oversight.report import coarse_cell

log = logging.getLogger("shotline.retention")


@dataclass(frozen=True)
class RetentionResult:
    cutoff: datetime
    incidents_coarsened: int
    versions_redacted: int
    detections_deleted: int
    attempts_deleted: int
    calls_coarsened: int


def redact(record: dict[str, Any], cell_m: float) -> tuple[dict[str, Any], set[str]]:
    """A record without detections or exact location, and the detection keys it held.

    The result is still a valid incident record (replays and readers keep working)."""
    keys = {k for r in record.get("round_details") or [] for k in r.get("detection_keys", [])}
    out = dict(record)
    location = dict(out.get("location") or {})
    if "lat" in location and "lon" in location:
        location["lat"], location["lon"] = coarse_cell(location["lat"], location["lon"], cell_m)
    location["alt_m"] = 0.0
    for name in ("semi_major_m", "semi_minor_m", "orientation_deg"):
        location[name] = None
    location["radius95_m"] = max(float(location.get("radius95_m") or 0.0), cell_m / 2)
    out["location"] = location
    out["round_details"] = []
    out["sensors_used"] = []
    out["sensors_rejected"] = []
    out["residual_rms_s"] = None
    return out, keys


async def run_retention(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    retention_days: float,
    cell_m: float,
    actor: audit.Actor = audit.SYSTEM,
) -> RetentionResult:
    """Delete what is due (see the module docstring); returns what was removed."""
    cutoff = now - timedelta(days=retention_days)
    async with pool.acquire() as conn, conn.transaction():
        due = await conn.fetch(
            """SELECT i.incident_id FROM dispatch_incidents i
               WHERE i.shot_time < $1 AND i.purged_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM dispatch_deliveries d
                                 WHERE d.incident_id = i.incident_id AND d.status = 'pending')
               ORDER BY i.incident_id
               FOR UPDATE OF i SKIP LOCKED""",
            cutoff,
        )
        ids = [r["incident_id"] for r in due]
        versions = await conn.fetch(
            """SELECT incident_id, version, record::text AS record
               FROM dispatch_incident_versions WHERE incident_id = ANY($1::text[])""",
            ids,
        )
        detections: set[str] = set()
        new_versions: list[tuple[str, int, str]] = []
        for v in versions:
            redacted, keys = redact(orjson.loads(v["record"]), cell_m)
            detections |= {f"{v['incident_id']}|{k}" for k in keys}
            new_versions.append((v["incident_id"], v["version"], orjson.dumps(redacted).decode()))
        if new_versions:
            await conn.execute(
                """UPDATE dispatch_incident_versions v SET record = t.record::jsonb
                   FROM unnest($1::text[], $2::int[], $3::text[]) AS t(id, version, record)
                   WHERE v.incident_id = t.id AND v.version = t.version""",
                [n[0] for n in new_versions],
                [n[1] for n in new_versions],
                [n[2] for n in new_versions],
            )
            if await _has_column(conn, "dispatch_incident_versions", "place"):
                await conn.execute(
                    "UPDATE dispatch_incident_versions SET place = NULL "
                    "WHERE incident_id = ANY($1::text[])",
                    ids,
                )
        current = await conn.fetch(
            "SELECT incident_id, record::text AS record FROM dispatch_incidents "
            "WHERE incident_id = ANY($1::text[])",
            ids,
        )
        rows = []
        for c in current:
            redacted, _ = redact(orjson.loads(c["record"]), cell_m)
            loc = redacted["location"]
            rows.append((c["incident_id"], loc["lat"], loc["lon"], orjson.dumps(redacted).decode()))
        if rows:
            await conn.execute(
                """UPDATE dispatch_incidents i SET lat = t.lat, lon = t.lon,
                          record = t.record::jsonb, purged_at = $5
                   FROM unnest($1::text[], $2::float8[], $3::float8[], $4::text[])
                        AS t(id, lat, lon, record)
                   WHERE i.incident_id = t.id""",
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                now,
            )
        attempts = await conn.execute(
            "DELETE FROM dispatch_delivery_attempts WHERE finished_at < $1", cutoff
        )
        calls = await conn.fetch(
            "SELECT call_id, lat, lon FROM oversight_calls WHERE received_at < $1 AND NOT coarse",
            cutoff,
        )
        if calls:
            cells = [coarse_cell(c["lat"], c["lon"], cell_m) for c in calls]
            await conn.execute(
                """UPDATE oversight_calls c SET lat = t.lat, lon = t.lon, coarse = true
                   FROM unnest($1::text[], $2::float8[], $3::float8[]) AS t(id, lat, lon)
                   WHERE c.call_id = t.id""",
                [c["call_id"] for c in calls],
                [cell[0] for cell in cells],
                [cell[1] for cell in cells],
            )
        result = RetentionResult(
            cutoff=cutoff,
            incidents_coarsened=len(rows),
            versions_redacted=len(new_versions),
            detections_deleted=len(detections),
            attempts_deleted=int(attempts.split()[-1]),
            calls_coarsened=len(calls),
        )
        await conn.execute(
            """INSERT INTO retention_runs (ran_at, cutoff, incidents_coarsened,
                 versions_redacted, detections_deleted, attempts_deleted, calls_coarsened)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            now,
            cutoff,
            result.incidents_coarsened,
            result.versions_redacted,
            result.detections_deleted,
            result.attempts_deleted,
            result.calls_coarsened,
        )
        detail = {k: v for k, v in asdict(result).items() if k != "cutoff"}
        detail["cutoff"] = cutoff.isoformat()
        await audit.append(conn, actor, "retention.run", "database", detail, at=now)
    log.info("retention run", extra={k: v for k, v in detail.items()})
    return result


async def _has_column(conn: asyncpg.Connection, table: str, column: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
            table,
            column,
        )
    )
