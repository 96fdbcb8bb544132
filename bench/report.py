"""The oversight report for a year of a city of 100 sensors (about 20,000 incidents).

Starts an embedded PostgreSQL (or uses ``DATABASE_URL``), fills it with a synthetic year:
100 sensors, ``--incidents`` incidents (each with its version 1 and, for gunfire, a
delivery), a CAD outcome for 60 % of them, one 911 call per two incidents (half near an
incident), 300 verified shootings, a 12-district areas layer and 20,000 audit rows. Then it
times ``make_report`` (the whole ``shotline report``: one snapshot read, the figures, the
JSON, the CSVs and the HTML) ``--runs`` times, and checks the JSON is byte-identical.

Target: seconds, not minutes.

    python bench/report.py [--incidents 20000] [--runs 3]

Last line: JSON with report_s (median), read/compute split, rows and the byte check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import shapely
from shapely.geometry import box

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.oversight import audit, records
from services.oversight.generate import make_report
from services.oversight.report import Params, build_report
from shared.db import migrate_url
from shared.embedded import EmbeddedPostgres
from shared.schemas import format_time

LAT0, LON0 = 40.40, -80.05
SIDE_DEG = 0.12  # ~13 km x 10 km
CLASSES = ["gunfire"] * 6 + ["probable_gunfire"] * 2 + ["fireworks", "other"]
START = datetime(2025, 1, 1, tzinfo=UTC)


def _record(i: int, rng: random.Random) -> dict:
    shot = START + timedelta(seconds=rng.uniform(0, 365 * 86400))
    lat, lon = LAT0 + rng.uniform(0, SIDE_DEG), LON0 + rng.uniform(0, SIDE_DEG)
    cls = rng.choice(CLASSES)
    return {
        "schema_version": 1,
        "incident_id": f"inc-{i:06d}",
        "version": 1,
        "event": "created",
        "zone": f"z{i % 10}",
        "classification": cls,
        "gunfire_probability": 0.9,
        "rounds": rng.choice([1, 1, 2, 3, 5]),
        "shot_time": format_time(shot),
        "last_shot_time": format_time(shot + timedelta(seconds=2)),
        "location": {"lat": lat, "lon": lon, "alt_m": 0.0, "radius95_m": 15.0},
        "sensor_count": 4,
        "sensors_used": [f"s{rng.randrange(100):03d}" for _ in range(4)],
        "sensors_rejected": [],
        "round_details": [],
        "first_detection_received_at": format_time(shot + timedelta(seconds=1)),
        "published_at": format_time(shot + timedelta(seconds=rng.uniform(1.5, 8))),
    }


async def fill(dsn: str, incidents: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    await migrate_url(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "sensors",
            columns=["sensor_id", "zone", "lat", "lon", "token_hash", "created_at"],
            records=[
                (
                    f"s{i:03d}",
                    f"z{i % 10}",
                    LAT0 + rng.uniform(0, SIDE_DEG),
                    LON0 + rng.uniform(0, SIDE_DEG),
                    f"h{i}".encode(),
                    START - timedelta(days=30),
                )
                for i in range(100)
            ],
        )
        recs = [_record(i, rng) for i in range(incidents)]
        rows, versions, deliveries, outcomes, calls = [], [], [], [], []
        for r in recs:
            shot = datetime.fromisoformat(r["shot_time"])
            doc = orjson.dumps(r).decode()
            rows.append(
                (
                    r["incident_id"],
                    1,
                    "created",
                    r["zone"],
                    r["classification"],
                    0.9,
                    r["location"]["lat"],
                    r["location"]["lon"],
                    shot,
                    shot,
                    doc,
                )
            )
            stored = shot + timedelta(seconds=rng.uniform(2, 10))
            versions.append((r["incident_id"], 1, "created", doc, stored))
            if r["classification"] == "gunfire":
                deliveries.append((r["incident_id"], stored + timedelta(seconds=0.2)))
            if rng.random() < 0.6:
                dispatch = stored + timedelta(seconds=rng.uniform(30, 300))
                finding = rng.choice(["confirmed", "unconfirmed", "unconfirmed", "unfounded"])
                outcomes.append(
                    (
                        r["incident_id"],
                        1,
                        rng.randint(1, 3),
                        ["none"],
                        False,
                        "",
                        f"C-{r['incident_id']}",
                        dispatch,
                        dispatch + timedelta(seconds=400),
                        dispatch + timedelta(seconds=rng.uniform(600, 3600)),
                        finding,
                        "api",
                    )
                )
            if rng.random() < 0.5:
                near = rng.random() < 0.5
                lat = r["location"]["lat"] + (rng.uniform(-0.002, 0.002) if near else 0.05)
                calls.append(
                    (
                        f"call-{r['incident_id']}",
                        shot + timedelta(seconds=90),
                        lat,
                        r["location"]["lon"],
                        "SHOTS FIRED",
                    )
                )
        await conn.copy_records_to_table(
            "dispatch_incidents",
            columns=[
                "incident_id",
                "version",
                "event",
                "zone",
                "classification",
                "gunfire_probability",
                "lat",
                "lon",
                "shot_time",
                "first_detection_received_at",
                "record",
            ],
            records=rows,
        )
        await conn.copy_records_to_table(
            "dispatch_incident_versions",
            columns=["incident_id", "version", "event", "record", "consumed_at"],
            records=versions,
        )
        await conn.execute(
            """INSERT INTO dispatch_subscriptions (subscription_id, name, channel, geofence,
                 classes, min_probability, events, format, url)
               VALUES ('sub', 'cad', 'webhook', '{}', '{gunfire}', 0.5, '{created}', 'json',
                       'https://cad.example/')"""
        )
        await conn.copy_records_to_table(
            "dispatch_deliveries",
            columns=[
                "subscription_id",
                "incident_id",
                "version",
                "event",
                "channel",
                "endpoint",
                "webhook_id",
                "status",
                "delivered_at",
            ],
            records=[
                (
                    "sub",
                    i,
                    1,
                    "created",
                    "webhook",
                    "https://cad.example:443",
                    f"m-{i}",
                    "delivered",
                    at,
                )
                for i, at in deliveries
            ],
        )
        await conn.copy_records_to_table(
            "dispatch_incident_outcomes",
            columns=[
                "incident_id",
                "outcome_version",
                "units_dispatched",
                "evidence",
                "call_911",
                "disposition",
                "cad_event_number",
                "dispatch_time",
                "on_scene_time",
                "clear_time",
                "finding",
                "source",
            ],
            records=outcomes,
        )
        await conn.copy_records_to_table(
            "oversight_calls",
            columns=["call_id", "received_at", "lat", "lon", "call_type"],
            records=calls,
        )
        await conn.copy_records_to_table(
            "oversight_shootings",
            columns=["shooting_id", "shot_time", "lat", "lon"],
            records=[
                (
                    f"S{i}",
                    datetime.fromisoformat(recs[(i * 37) % len(recs)]["shot_time"]),
                    recs[(i * 37) % len(recs)]["location"]["lat"] + rng.uniform(-2e-4, 2e-4),
                    recs[(i * 37) % len(recs)]["location"]["lon"],
                )
                for i in range(300)
            ],
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS geo_areas (
                 layer text NOT NULL, name text NOT NULL, geometry bytea NOT NULL,
                 attributes jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (layer, name))"""
        )
        step = SIDE_DEG / 4
        for k in range(12):
            col, row = k % 4, k // 4
            geom = box(
                LON0 + col * step,
                LAT0 + row * SIDE_DEG / 3,
                LON0 + (col + 1) * step,
                LAT0 + (row + 1) * SIDE_DEG / 3,
            )
            await conn.execute(
                "INSERT INTO geo_areas (layer, name, geometry, attributes) VALUES "
                "('districts', $1, $2, $3::jsonb)",
                f"D{k + 1:02d}",
                shapely.to_wkb(geom),
                json.dumps({"population": 50_000}),
            )
        chain, prev = [], audit.GENESIS  # a year of reads, chained as audit.append does
        for i in range(20_000):
            at = format_time(START + timedelta(minutes=25 * i))
            target = recs[i % len(recs)]["incident_id"]
            digest = audit.row_hash(
                prev, i + 1, at, "u", "dispatcher", "incident.read", target, "{}"
            )
            chain.append(
                (i + 1, at, "u", "dispatcher", "incident.read", target, "{}", prev, digest)
            )
            prev = digest
        await conn.copy_records_to_table("audit_log", records=chain)
        return {
            "incidents": len(rows),
            "outcomes": len(outcomes),
            "calls": len(calls),
            "deliveries": len(deliveries),
        }
    finally:
        await conn.close()


async def bench(dsn: str, runs: int) -> dict[str, float | int | bool]:
    params = Params(start=date(2025, 1, 1), end=date(2025, 12, 31), area_layer="districts")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        times, bodies = [], []
        out = Path(tempfile.mkdtemp(prefix="shotline-report-"))
        for i in range(runs):
            t0 = time.perf_counter()
            written = await make_report(pool, params, out / f"r{i}")
            times.append(time.perf_counter() - t0)
            bodies.append(written["report.json"].read_bytes())
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            inputs = await records.read_inputs(conn, params)
            read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = build_report(inputs, params, version="bench")
        compute_s = time.perf_counter() - t0
        alerts = report["figures"]["1_alerts"]["by_class"]["rows"][-1][1]
    finally:
        await pool.close()
    return {
        "report_s": round(statistics.median(times), 3),
        "report_s_max": round(max(times), 3),
        "read_s": round(read_s, 3),
        "compute_s": round(compute_s, 3),
        "alerts_in_report": alerts,
        "json_bytes": len(bodies[0]),
        "byte_identical": all(b == bodies[0] for b in bodies),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import os

    dsn = os.environ.get("DATABASE_URL")
    postgres = None
    if dsn is None:
        postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="shotline-bench-")) / "pg").start()
        dsn = postgres.dsn
    try:
        t0 = time.perf_counter()
        filled = asyncio.run(fill(dsn, args.incidents, args.seed))
        fill_s = time.perf_counter() - t0
        result = asyncio.run(bench(dsn, args.runs))
    finally:
        if postgres is not None:
            postgres.stop()
    print(
        json.dumps(
            {
                **result,
                **filled,
                "fill_s": round(fill_s, 1),
                "sensors": 100,
                "target_s": 60,
                "meets_target": result["report_s"] < 60,
            }
        )
    )


if __name__ == "__main__":
    main()
