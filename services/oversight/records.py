"""Reading the report's rows out of PostgreSQL (the only I/O of the report).

Each reader returns the plain dataclasses of :mod:`services.oversight.report`, ordered, so
the pure figures see the same sequence for the same database. Areas come from the areas
layer table (``geo_areas``: layer, name, WKB geometry, attributes) through
:func:`read_areas` alone; a database without that table has no areas.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import shapely
from shapely.geometry import mapping

from services.oversight.report import (
    Alert,
    Area,
    Call,
    Holdings,
    Inputs,
    Outcome,
    Params,
    RetentionRun,
    Sensor,
    Shooting,
)

Conn = asyncpg.Connection | asyncpg.Pool

#: Read this far around the period: same-shot siblings, calls and shootings near its edges.
_MARGIN = "1 day"


def _wire_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


async def read_alerts(conn: Conn, params: Params) -> tuple[list[Alert], list[Alert]]:
    """(standing incidents, cancelled incidents) whose first round lies in the period."""
    rows = await conn.fetch(
        f"""SELECT i.incident_id, i.zone, i.classification, i.event, i.shot_time, i.lat, i.lon,
                  i.same_shot_as, (i.record->>'rounds')::int AS rounds,
                  (i.record->'sensors_used')::text AS sensors_used,
                  v.record->>'classification' AS first_class,
                  v.record->>'published_at' AS located_at, v.consumed_at AS stored_at,
                  d.delivered_at
           FROM dispatch_incidents i
           LEFT JOIN dispatch_incident_versions v
             ON v.incident_id = i.incident_id AND v.version = 1
           LEFT JOIN (SELECT incident_id, min(delivered_at) AS delivered_at
                      FROM dispatch_deliveries WHERE version = 1 AND status = 'delivered'
                      GROUP BY incident_id) d ON d.incident_id = i.incident_id
           WHERE i.shot_time >= $1::timestamptz - interval '{_MARGIN}'
             AND i.shot_time < $2::timestamptz + interval '{_MARGIN}'
           ORDER BY i.shot_time, i.incident_id""",
        params.start_at,
        params.end_at,
    )
    standing, cancelled = [], []
    for r in rows:
        alert = Alert(
            incident_id=r["incident_id"],
            zone=r["zone"],
            classification=r["classification"],
            first_classification=r["first_class"] or r["classification"],
            event=r["event"],
            rounds=r["rounds"] or 1,
            shot_time=r["shot_time"],
            lat=r["lat"],
            lon=r["lon"],
            located_at=_wire_time(r["located_at"]),
            stored_at=r["stored_at"],
            delivered_at=r["delivered_at"],
            same_shot_as=tuple(r["same_shot_as"]),
            sensors_used=tuple(orjson.loads(r["sensors_used"] or "[]")),
        )
        (cancelled if r["event"] == "cancelled" else standing).append(alert)
    return standing, cancelled


async def read_outcomes(conn: Conn, params: Params) -> list[Outcome]:
    """The latest outcome version of every incident of the period."""
    rows = await conn.fetch(
        f"""SELECT DISTINCT ON (o.incident_id) o.*
           FROM dispatch_incident_outcomes o
           JOIN dispatch_incidents i USING (incident_id)
           WHERE i.shot_time >= $1::timestamptz - interval '{_MARGIN}'
             AND i.shot_time < $2::timestamptz + interval '{_MARGIN}'
           ORDER BY o.incident_id, o.outcome_version DESC""",
        params.start_at,
        params.end_at,
    )
    return [
        Outcome(
            incident_id=r["incident_id"],
            cad_event_number=r["cad_event_number"],
            entry_time=r["entry_time"],
            dispatch_time=r["dispatch_time"],
            on_scene_time=r["on_scene_time"],
            clear_time=r["clear_time"],
            units=tuple(r["units"]),
            units_dispatched=r["units_dispatched"],
            final_call_type=r["final_call_type"],
            disposition=r["disposition"],
            finding=r["finding"],
            evidence=tuple(sorted(r["evidence"])),
            report_taken=r["report_taken"],
        )
        for r in rows
    ]


async def read_calls(conn: Conn, params: Params) -> list[Call]:
    rows = await conn.fetch(
        f"""SELECT call_id, received_at, lat, lon, call_type FROM oversight_calls
           WHERE received_at >= $1::timestamptz - interval '{_MARGIN}'
             AND received_at < $2::timestamptz + interval '{_MARGIN}'
           ORDER BY received_at, call_id""",
        params.start_at,
        params.end_at,
    )
    return [Call(r["call_id"], r["received_at"], r["lat"], r["lon"], r["call_type"]) for r in rows]


async def read_shootings(conn: Conn, params: Params) -> list[Shooting]:
    rows = await conn.fetch(
        """SELECT shooting_id, shot_time, lat, lon FROM oversight_shootings
           WHERE shot_time >= $1 AND shot_time < $2 ORDER BY shot_time, shooting_id""",
        params.start_at,
        params.end_at,
    )
    return [Shooting(r["shooting_id"], r["shot_time"], r["lat"], r["lon"]) for r in rows]


def _population(attributes: dict[str, Any]) -> float | None:
    for key, value in attributes.items():
        if key.lower() in {"population", "pop", "residents"} and isinstance(value, int | float):
            return float(value)
    return None


async def read_areas(conn: Conn, layer: str | None) -> list[Area]:
    """The areas of one loaded layer (``shotline areas load``), by name; [] for no layer.

    Raises ValueError when the layer is not loaded (the operator named the wrong one).
    """
    if layer is None:
        return []
    if await conn.fetchval("SELECT to_regclass('geo_areas')") is None:
        raise ValueError("no areas layer table in this database (load one with shotline areas)")
    rows = await conn.fetch(
        "SELECT name, geometry, attributes::text AS attributes FROM geo_areas "
        "WHERE layer = $1 ORDER BY name",
        layer,
    )
    if not rows:
        raise ValueError(f"--areas: no areas layer named {layer!r} is loaded")
    return [
        Area(
            name=r["name"],
            geometry=mapping(shapely.from_wkb(bytes(r["geometry"]))),
            population=_population(orjson.loads(r["attributes"] or "{}")),
        )
        for r in rows
    ]


async def read_sensors(conn: Conn) -> list[Sensor]:
    rows = await conn.fetch(
        "SELECT sensor_id, created_at, revoked_at FROM sensors ORDER BY sensor_id"
    )
    return [Sensor(r["sensor_id"], r["created_at"], r["revoked_at"]) for r in rows]


async def read_retention_runs(conn: Conn) -> list[RetentionRun]:
    rows = await conn.fetch(
        """SELECT ran_at, incidents_coarsened, versions_redacted, detections_deleted,
                  attempts_deleted, calls_coarsened FROM retention_runs ORDER BY run_id"""
    )
    return [RetentionRun(**dict(r)) for r in rows]


async def read_holdings(conn: Conn, params: Params) -> Holdings:
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM dispatch_incidents WHERE purged_at IS NULL) AS exact,
             (SELECT count(*) FROM dispatch_incidents WHERE purged_at IS NOT NULL) AS coarse,
             (SELECT coalesce(sum(n), 0) FROM (
                SELECT (SELECT count(*) FROM jsonb_array_elements(r->'detection_keys')) AS n
                FROM dispatch_incidents i,
                     jsonb_array_elements(coalesce(i.record->'round_details', '[]')) AS r
                WHERE i.purged_at IS NULL) AS k) AS detections,
             (SELECT count(*) FROM oversight_calls WHERE NOT coarse) AS calls_exact,
             (SELECT count(*) FROM oversight_calls WHERE coarse) AS calls_coarse,
             (SELECT count(*) FROM audit_log) AS audit_rows,
             (SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS audit_head"""
    )
    reads = await conn.fetch(
        """SELECT role, count(*) AS n FROM audit_log
           WHERE action = 'incident.read' AND at >= $1 AND at < $2 GROUP BY role""",
        _wire(params.start_at),
        _wire(params.end_at),
    )
    assert row is not None
    return Holdings(
        incidents_exact=row["exact"],
        incidents_coarsened=row["coarse"],
        detections_held=int(row["detections"]),
        calls_exact=row["calls_exact"],
        calls_coarsened=row["calls_coarse"],
        audit_rows=row["audit_rows"],
        audit_head_hash=row["audit_head"] or "",
        reads_by_role={r["role"]: r["n"] for r in reads},
    )


def _wire(value: datetime) -> str:
    from shared.schemas import format_time

    return format_time(value)


async def read_inputs(conn: Conn, params: Params) -> Inputs:
    """Everything :func:`~services.oversight.report.build_report` needs for the period."""
    standing, cancelled = await read_alerts(conn, params)
    return Inputs(
        alerts=standing,
        cancelled=cancelled,
        outcomes=await read_outcomes(conn, params),
        calls=await read_calls(conn, params),
        shootings=await read_shootings(conn, params),
        areas=await read_areas(conn, params.area_layer),
        sensors=await read_sensors(conn),
        retention_runs=await read_retention_runs(conn),
        holdings=await read_holdings(conn, params),
    )
