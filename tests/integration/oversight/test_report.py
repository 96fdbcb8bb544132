"""The oversight report of the fixture city (see ``city.py``), every figure computed by hand.

The records go in the ways a city puts them in: CAD, 911 and shooting exports through
``shotline … import`` (bad rows named by line, the rest imported), one outcome through the
API, one read of an incident's exact data by a dispatcher. The report is made twice by
``shotline report`` and must be byte-identical; importing everything again changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from services.dispatch.main import DispatchService
from services.oversight import tokens
from services.oversight.audit import Actor
from services.oversight.settings import OversightSettings
from shared.db import create_pool
from tests.integration.oversight import city
from tests.integration.oversight.helpers import cli, snapshot

NOW = city.t("2026-11-25T12:00:00")
pytestmark = pytest.mark.slow


def rows(report: dict, group: str, table: str) -> list[list]:
    return report["figures"][group][table]["rows"]


async def test_the_fixture_city_gives_exactly_the_hand_computed_report(
    database_url, kafka_bootstrap, make_settings, tmp_path: Path
):
    pool = await create_pool(database_url)
    try:
        await city.build_city(pool)
        _, dispatcher = await tokens.create_token(
            pool, "d.jones", "dispatcher", actor=Actor("cli", "operator"), now=NOW
        )
        service = DispatchService(
            make_settings(consume=False, workers=False),
            bootstrap_servers=kafka_bootstrap,
            database_url=database_url,
            clock=lambda: NOW,
            oversight=OversightSettings(retention_interval_s=0),
        )
        await service.start()
        try:
            headers = {"Authorization": f"Bearer {dispatcher}"}
            async with httpx.AsyncClient(base_url=service.url, headers=headers) as client:
                a6 = city.stored_at(city.BY_KEY["A06"])
                first = {
                    "units_dispatched": 1,
                    "evidence": ["none"],
                    "call_911": False,
                    "finding": "unfounded",
                }
                r1 = await client.post("/v1/incidents/fx-a06/outcome", json=first)
                assert r1.status_code == 201, r1.text
                second = first | {
                    "finding": "unconfirmed",
                    "dispatch_time": (a6 + timedelta(seconds=200)).isoformat(),
                    "clear_time": (a6 + timedelta(seconds=1100)).isoformat(),
                    "units": ["6A"],
                    "cad_event_number": None,
                }
                r2 = await client.post("/v1/incidents/fx-a06/outcome", json=second)
                assert r2.status_code == 201, r2.text
                assert r2.json()["outcome_version"] == 2 and r2.json()["units"] == ["6A"]
                backwards = second | {"clear_time": a6.isoformat()}
                bad = await client.post("/v1/incidents/fx-a06/outcome", json=backwards)
                assert bad.status_code == 422
                assert bad.json()["errors"][0]["field"] == "clear_time"
                assert (await client.get("/v1/incidents/fx-a01")).status_code == 200
        finally:
            await service.stop(5.0)

        files = {}
        for name, text in [
            ("cad.csv", city.cad_csv()),
            ("cad.yml", city.CAD_MAPPING),
            ("calls.csv", city.calls_csv()),
            ("calls.yml", city.CALLS_MAPPING),
            ("shootings.csv", city.shootings_csv()),
            ("shootings.yml", city.SHOOTINGS_MAPPING),
        ]:
            files[name] = tmp_path / name
            files[name].write_text(text)

        code, out, err = await cli(
            database_url,
            "outcomes",
            "import",
            str(files["cad.csv"]),
            "--map",
            str(files["cad.yml"]),
        )
        assert code == 1, err  # bad rows: reported, the rest imported
        assert "line 4: dispatch_time: 'yesterday' is not a time" in err
        assert "line 6: incident_id 'fx-nope' is unknown" in err
        assert "5 added, 0 updated, 0 unchanged, 2 bad row(s)" in out
        code, out, err = await cli(
            database_url,
            "calls",
            "import",
            str(files["calls.csv"]),
            "--map",
            str(files["calls.yml"]),
        )
        assert code == 1 and "line 8: lat: 'north' is not a number" in err, err
        assert "5 added, 0 updated, 0 unchanged, 1 bad row(s)" in out  # K6 is not shots fired
        code, out, err = await cli(
            database_url,
            "shootings",
            "import",
            str(files["shootings.csv"]),
            "--map",
            str(files["shootings.yml"]),
        )
        assert code == 0, err
        assert "4 added" in out

        args = ["report", "--from", "2026-11-01", "--to", "2026-11-30", "--areas", "districts"]
        code, _, err = await cli(database_url, *args, "--out", str(tmp_path / "r1"))
        assert code == 0, err
        code, _, err = await cli(database_url, *args, "--out", str(tmp_path / "r2"))
        assert code == 0, err

        # reproducible: byte-identical JSON and CSVs; the HTML names version and hash
        first_files = sorted(p.name for p in (tmp_path / "r1").iterdir())
        assert first_files == sorted(p.name for p in (tmp_path / "r2").iterdir())
        for name in first_files:
            if name != "report.html":
                assert (tmp_path / "r1" / name).read_bytes() == (
                    tmp_path / "r2" / name
                ).read_bytes(), name
        body = (tmp_path / "r1" / "report.json").read_bytes()
        html = (tmp_path / "r1" / "report.html").read_text()
        assert hashlib.sha256(body).hexdigest() in html
        report = json.loads(body)
        assert f"Shotline {report['shotline_version']}" in html
        assert report["shotline_version"] not in ("", "unknown")
        head = await pool.fetchval("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        check_figures(report, head)
        assert (tmp_path / "r1" / "1_alerts__map_cells.csv").read_text().splitlines()[1:] == [
            f"{city.CELLS['Z'][0]},{city.CELLS['Z'][1]},South,3,2,1,0,0",
            f"{city.CELLS['X'][0]},{city.CELLS['X'][1]},North,4,2,1,1,0",
        ]

        # importing twice changes nothing (not even the audit log)
        before = await snapshot(pool)
        for kind, csv_name, map_name, total in [
            ("outcomes", "cad.csv", "cad.yml", 5),
            ("calls", "calls.csv", "calls.yml", 5),
            ("shootings", "shootings.csv", "shootings.yml", 4),
        ]:
            code, out, _ = await cli(
                database_url,
                kind,
                "import",
                str(files[csv_name]),
                "--map",
                str(files[map_name]),
            )
            assert f"0 added, 0 updated, {total} unchanged" in out, out
        assert await snapshot(pool) == before
        code, _, err = await cli(database_url, *args, "--out", str(tmp_path / "r3"))
        assert code == 0, err
        assert (tmp_path / "r3" / "report.json").read_bytes() == body
    finally:
        await pool.close()


def check_figures(report: dict, audit_head: str) -> None:
    # 1. Alerts: 9 (A1-A9; A10 is cancelled, A11 is A7's shot, A12 is in October).
    # gunfire A1 A2 A5 A7 A9 (single: A2 A5), probable A3 A8 (single: A8), fireworks A4,
    # other A6 (single).
    assert rows(report, "1_alerts", "by_class") == [
        ["gunfire", 5, 0.5556, 2, 3],
        ["probable_gunfire", 2, 0.2222, 1, 1],
        ["fireworks", 1, 0.1111, 0, 1],
        ["other", 1, 0.1111, 1, 0],
        ["all", 9, 1.0, 4, 5],
    ]
    # weeks from Monday 26 Oct (1 Nov is a Sunday): A9 | A1 A2 A4 | A3 | A5 A6 | A7 | A8
    assert rows(report, "1_alerts", "by_week") == [
        ["2026-10-26", 1, 0, 0, 0, 1],
        ["2026-11-02", 2, 0, 1, 0, 3],
        ["2026-11-09", 0, 1, 0, 0, 1],
        ["2026-11-16", 1, 0, 0, 1, 2],
        ["2026-11-23", 1, 0, 0, 0, 1],
        ["2026-11-30", 0, 1, 0, 0, 1],
    ]
    # North (8 km², 20,000 residents): A1-A6; South (8 km², 10,000): A7-A9
    north, south = rows(report, "1_alerts", "by_area")
    assert north[0] == "North" and south[0] == "South"
    assert north[1] == pytest.approx(8.0, abs=0.02) and south[1] == pytest.approx(8.0, abs=0.02)
    assert north[2:8] == [20000.0, 6, 3, 1, 1, 1] and south[2:8] == [10000.0, 3, 2, 1, 0, 0]
    assert north[8] == pytest.approx(0.75, abs=0.003) and north[9] == 3.0
    assert south[8] == pytest.approx(0.375, abs=0.002) and south[9] == 3.0
    # cells: X has 4, Z has 3, Y (2 alerts) is suppressed at k = 3
    cells = report["figures"]["1_alerts"]["map_cells"]
    assert [r[3] for r in cells["rows"]] == [3, 4]
    assert "7 of 9 alerts" in cells["denominator"]
    assert "2 alerts in 1 suppressed cells" in cells["denominator"]

    # 2. Linkage over 9 alerts: outcomes for A1 A2 A3 A5 A7 (CAD) and A6 (API);
    # CAD numbers: the five CAD rows; dispositions: A1 A2 A3 A7 A6; dispatched and on scene:
    # A1 A2 A7; dispatched and cleared: A1 A2 A3 A7 A6.
    assert rows(report, "2_linkage", "linkage") == [
        ["any outcome recorded", 6, 0.6667],
        ["CAD event number", 5, 0.5556],
        ["disposition (confirmed / unconfirmed / unfounded)", 5, 0.5556],
        ["unit times: dispatched and on scene", 3, 0.3333],
        ["unit times: dispatched and cleared", 5, 0.5556],
    ]

    # 3. Outcomes over 5 disposed: confirmed A1 A7; unconfirmed A2 A6 (its latest version);
    # unfounded A3; gun crime (casings or weapon) A1 A7; reports A1 A7; arrest and weapon A7.
    assert rows(report, "3_outcomes", "outcomes") == [
        ["confirmed", 2, 0.4],
        ["unconfirmed", 2, 0.4],
        ["unfounded", 1, 0.2],
        ["evidence of a gun-related crime", 2, 0.4],
        ["report taken", 2, 0.4],
        ["arrest", 1, 0.2],
        ["weapon recovered", 1, 0.2],
    ]
    assert rows(report, "3_outcomes", "evidence") == [
        ["arrest", 1, 0.2],
        ["casings", 2, 0.4],
        ["none", 3, 0.6],
        ["weapon_recovered", 1, 0.2],
    ]

    # 4. K1 (120 s, 100 m) corroborates A1, K2 (300 s, 350 m) A7; K3 is 600 m from A5; K4
    # is far from everything; K5 is in December. With a call: A1 A7, both confirmed. Without:
    # 7 alerts, disposed A2 A3 A6, none confirmed.
    assert rows(report, "4_corroboration", "corroboration") == [
        ["alert with a 911 call", 2, 2, 2, 1.0],
        ["alert with no 911 call", 7, 3, 0, 0.0],
        ["911 call with no alert", 2, None, None, None],
    ]

    # 5. S1 located (10 m from A1), S2 mislocated (80 m from A7), S3 missed, S4 located
    # (5 m from A5): 2 / 4 = 0.5; Wilson 95 %: centre 0.5, half-width
    # 1.96 * sqrt(0.25/4 + 1.96²/64) / (1 + 1.96²/4) = 0.35 -> [0.15, 0.85]
    shootings = report["figures"]["5_verified_shootings"]
    assert shootings["summary"]["rows"] == [
        ["located", 2, 0.5],
        ["mislocated", 1, 0.25],
        ["missed", 1, 0.25],
    ]
    assert shootings["contract_rate"]["rows"] == [[2, 4, 0.5, 0.15, 0.85]]
    verdicts = {r[0]: (r[2], r[3]) for r in shootings["per_shooting"]["rows"]}
    assert verdicts == {
        "S1": ("located", "fx-a01"),
        "S2": ("mislocated", "fx-a07"),
        "S3": ("missed", None),
        "S4": ("located", "fx-a05"),
    }

    # 6. located 1 2 3 4 5 6 8 10 30; stored 2 3 4 5 6 7 9 11 65; delivered (A5 has none)
    # 3 4 5 8 9 10 66 70. Nearest rank: p50 of 9 is the 5th, p90 and p99 the 9th; of 8,
    # the 4th and the 8th.
    assert rows(report, "6_latency", "latency") == [
        ["shot -> located", 9, 5.0, 30.0, 30.0, 1.0],
        ["shot -> stored", 9, 6.0, 65.0, 65.0, 0.8889],
        ["shot -> delivered", 8, 8.0, 70.0, 70.0, 0.75],
    ]
    assert rows(report, "6_latency", "distribution") == [
        ["shot -> located", 5, 3, 0, 1, 0, 0, 0, 0, 0],
        ["shot -> stored", 4, 3, 1, 0, 0, 0, 1, 0, 0],
        ["shot -> delivered", 3, 3, 0, 0, 0, 0, 2, 0, 0],
    ]

    # 7. From stored: dispatch 60 120 90 30 (CAD) and 200 (A6) -> p50 90, p90 200, mean 100;
    # on scene 300 600 240 -> p50 300, p90 600, mean 380. Nothing found: A2 1 unit x 600 s,
    # A3 3 x 1200 s, A6 1 x 900 s = 5100 s = 1.42 h.
    response = report["figures"]["7_response"]
    assert response["response"]["rows"] == [
        ["alert -> dispatch", 5, 90.0, 200.0, 100.0],
        ["alert -> on scene", 3, 300.0, 600.0, 380.0],
    ]
    assert response["officer_time"]["rows"] == [[3, 3, 1.42]]

    # 8. A3 gunfire -> probable; A10 cancelled. 24 sensors: one revoked on 16 Nov (15/30),
    # one added on 21 Nov (10/30): (22 + 0.5 + 0.3333) / 24 = 0.9514.
    changes = report["figures"]["8_changes_and_sensors"]
    assert changes["classification_changes"]["rows"] == [
        ["gunfire", "cancelled", 1],
        ["gunfire", "probable_gunfire", 1],
    ]
    availability = changes["sensor_availability"]
    assert len(availability["rows"]) == 24
    assert availability["rows"][0][1] == 0.5 and availability["rows"][1][1] == 0.3333
    # every incident's location used the array's first 4 sensors: 9 alerts each, others none
    assert [r[2] for r in availability["rows"]] == [9] * 4 + [0] * 20
    assert "overall 0.9514" in availability["denominator"]

    # 9. 12 incidents held exactly, A1's 12 detections, 5 calls (K1-K5), no retention run;
    # audit: token, 2 outcome POSTs, 1 read, 3 imports = 7 rows; the dispatcher's one read.
    holdings = report["figures"]["9_holdings"]
    assert holdings["held"]["rows"] == [
        ["incidents with exact location", 12],
        ["incidents coarsened by retention", 0],
        ["detections referenced by held incidents", 12],
        ["911 calls with exact location", 5],
        ["911 calls coarsened by retention", 0],
        ["audit log rows", 7],
        ["audit log head (SHA-256 of its last row)", audit_head],
    ]
    assert holdings["purged"]["rows"][0] == ["retention runs", 0]
    assert holdings["reads_by_role"]["rows"] == [["dispatcher", 1]]
    for group in report["figures"].values():
        for table in group.values():
            assert table["definition"] and table["denominator"]
