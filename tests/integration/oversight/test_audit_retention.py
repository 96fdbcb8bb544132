"""The audit log proves itself; retention deletes what is due and nothing else."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson

from services.dispatch import store
from services.dispatch.main import DispatchService
from services.oversight import audit, records
from services.oversight.report import Params, build_report, coarse_cell
from services.oversight.retention import run_retention
from services.oversight.settings import OversightSettings
from shared.db import create_pool
from tests.integration.oversight import city
from tests.integration.oversight.helpers import cli, snapshot

NOW = city.t("2026-11-25T12:00:00")
ACTOR = audit.Actor("j.doe", "admin")


async def _five_rows(pool) -> None:
    for i in range(1, 6):
        await audit.append(pool, ACTOR, "test.change", f"thing-{i}", {"n": i}, at=NOW)


async def test_audit_verify_names_the_first_edited_deleted_or_inserted_row(database_url):
    pool = await create_pool(database_url)
    try:
        await _five_rows(pool)
        verdict = await audit.verify(pool)
        assert verdict.ok and verdict.rows == 5
        code, out, _ = await cli(database_url, "audit", "verify")
        assert code == 0 and "audit log intact: 5 rows" in out

        # edited: row 3's detail changes, its stored hash no longer matches
        await pool.execute("UPDATE audit_log SET detail = '{\"n\":30}' WHERE seq = 3")
        verdict = await audit.verify(pool)
        assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
        assert "row 3 was edited" in verdict.problem
        code, _, err = await cli(database_url, "audit", "verify")
        assert code == 1 and "BROKEN at row 3" in err and "edited" in err
        await pool.execute("UPDATE audit_log SET detail = '{\"n\":3}' WHERE seq = 3")
        assert (await audit.verify(pool)).ok

        # deleted: row 4 is gone
        saved = await pool.fetchrow("SELECT * FROM audit_log WHERE seq = 4")
        await pool.execute("DELETE FROM audit_log WHERE seq = 4")
        verdict = await audit.verify(pool)
        assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
        assert "row 4 is missing (deleted)" in verdict.problem

        # inserted: a forged row 4 with a correct hash of its own breaks row 5's link
        prev = (await pool.fetchrow("SELECT hash FROM audit_log WHERE seq = 3"))["hash"]
        forged = audit.row_hash(prev, 4, saved["at"], "mallory", "admin", "x", "y", "{}")
        await pool.execute(
            "INSERT INTO audit_log VALUES (4, $1, 'mallory', 'admin', 'x', 'y', '{}', $2, $3)",
            saved["at"],
            prev,
            forged,
        )
        verdict = await audit.verify(pool)
        assert (verdict.ok, verdict.first_bad_seq) == (False, 5)
        assert "does not follow row 4" in verdict.problem
        await pool.execute("DELETE FROM audit_log WHERE seq = 4")
        await pool.execute(
            "INSERT INTO audit_log VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *saved.values()
        )
        assert (await audit.verify(pool)).ok
    finally:
        await pool.close()


async def test_retention_deletes_what_is_due_and_nothing_else(database_url):
    pool = await create_pool(database_url)
    try:
        await city.build_city(pool)
        await pool.execute(
            """INSERT INTO oversight_calls (call_id, received_at, lat, lon, call_type)
               VALUES ('old', '2025-10-01T00:00:00Z', 40.4411111, -79.9922222, 'SHOTS'),
                      ('new', '2026-11-20T00:00:00Z', 40.4411111, -79.9922222, 'SHOTS')"""
        )
        # At 21.5 days on 25 Nov 12:00 the cutoff is 4 Nov 00:00: A12 (31 Oct), A9 (1 Nov),
        # A1 and A2 (3 Nov) are due; A1 keeps its exact data while a delivery of it is
        # still pending.
        await pool.execute(
            """UPDATE dispatch_deliveries SET status = 'pending', delivered_at = NULL
               WHERE incident_id = 'fx-a01'"""
        )
        before = await snapshot(pool)
        result = await run_retention(pool, now=NOW, retention_days=21.5, cell_m=city.CELL_M)
        due = {"fx-a02", "fx-a09", "fx-a12"}
        assert result.incidents_coarsened == len(due)
        assert result.versions_redacted == len(due)
        assert result.calls_coarsened == 1
        after = await snapshot(pool)
        changed = {r[0] for r in after["incidents"]} - {
            r[0] for r in after["incidents"] if r in before["incidents"]
        }
        assert changed == due  # nothing else was touched
        assert [r for r in after["versions"] if r[0] not in due] == [
            r for r in before["versions"] if r[0] not in due
        ]
        for incident_id in sorted(due):
            spec = next(s for s in city.SPECS if s.incident_id == incident_id)
            row = await pool.fetchrow(
                "SELECT lat, lon, record::text AS record, purged_at FROM dispatch_incidents "
                "WHERE incident_id = $1",
                incident_id,
            )
            assert (row["lat"], row["lon"]) == coarse_cell(*spec.position, city.CELL_M)
            record = orjson.loads(row["record"])
            assert record["round_details"] == [] and record["sensors_used"] == []
            assert record["classification"] == spec.now_class and record["rounds"] == spec.rounds
            assert row["purged_at"] == NOW
        calls = {r["call_id"]: r for r in await pool.fetch("SELECT * FROM oversight_calls")}
        assert calls["old"]["coarse"] and not calls["new"]["coarse"]
        assert (calls["new"]["lat"], calls["new"]["lon"]) == (40.4411111, -79.9922222)
        # counted, audited, shown in the report; a second run finds nothing due
        runs = await pool.fetch("SELECT * FROM retention_runs")
        assert [(r["incidents_coarsened"], r["calls_coarsened"]) for r in runs] == [(3, 1)]
        assert [r["action"] for r in await audit.list_rows(pool)] == ["retention.run"]
        again = await run_retention(pool, now=NOW, retention_days=21.5, cell_m=city.CELL_M)
        assert (again.incidents_coarsened, again.calls_coarsened) == (0, 0)
        params = Params(start=NOW.date() - timedelta(days=30), end=NOW.date())
        async with pool.acquire() as conn:
            report = build_report(await records.read_inputs(conn, params), params, version="t")
        held = dict(map(tuple, report["figures"]["9_holdings"]["held"]["rows"]))
        assert held["incidents with exact location"] == 9
        assert held["incidents coarsened by retention"] == 3
        assert held["detections referenced by held incidents"] == 12  # A1's, still held
        purged = dict(map(tuple, report["figures"]["9_holdings"]["purged"]["rows"]))
        assert purged["retention runs"] == 2 and purged["incidents coarsened"] == 3
        assert purged["911 calls coarsened"] == 1
        # the aggregates outlive the raw rows: A12 and A9 (26 Oct - 1 Nov, both coarsened)
        # are still gunfire alerts of their week
        week = report["figures"]["1_alerts"]["by_week"]["rows"][0]
        assert week == ["2026-10-26", 2, 0, 0, 0, 2]
        # detections of a redacted incident are counted when they go
        await pool.execute(
            "UPDATE dispatch_deliveries SET status = 'delivered' WHERE incident_id = 'fx-a01'"
        )
        third = await run_retention(pool, now=NOW, retention_days=21.5, cell_m=city.CELL_M)
        assert (third.incidents_coarsened, third.detections_deleted) == (1, 12)
    finally:
        await pool.close()


async def test_dispatch_runs_retention_on_its_timer(make_settings, kafka_bootstrap, database_url):
    service = DispatchService(
        make_settings(consume=False, workers=False),
        bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        oversight=OversightSettings(retention_interval_s=0.2),
    )
    await service.start()
    try:
        assert service.pool is not None
        for _ in range(100):
            if await service.pool.fetchval("SELECT count(*) FROM retention_runs") >= 2:
                break
            await asyncio.sleep(0.05)
        runs = await service.pool.fetchval("SELECT count(*) FROM retention_runs")
        assert runs >= 2
        actions = {r["action"] for r in await audit.list_rows(service.pool)}
        assert actions == {"retention.run"}
    finally:
        await service.stop(5.0)


def test_a_record_loses_its_detections_and_exact_location_but_stays_a_record():
    from services.oversight.retention import redact
    from shared.schemas import IncidentRecord

    spec = city.BY_KEY["A01"]
    record = city._record(spec, 1, "gunfire", "created").model_dump(mode="json")
    redacted, keys = redact(record, city.CELL_M)
    assert len(keys) == 12
    IncidentRecord.model_validate(redacted)  # replays and readers keep working
    assert redacted["location"]["radius95_m"] == city.CELL_M / 2
    assert (redacted["location"]["lat"], redacted["location"]["lon"]) == coarse_cell(
        *spec.position, city.CELL_M
    )
    assert store.CAD_FIELDS  # the outcome store is importable from the domain tests
