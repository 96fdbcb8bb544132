"""``shotline drill`` against a running pipeline: the drill's alerts say Exercise in every
format, a real shot fired meanwhile still says Actual, and ``drill score`` reads the capture.

Real broker, database and HTTP; the drill and its score run as the real CLI (child processes).
"""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson

from services.demo import array_geofence, register_array
from services.locator.simulate import build_array, scenario, to_detection_in
from services.pipeline import Pipeline
from shared.schemas import format_time
from tests.e2e.test_pipeline import pipeline  # noqa: F401  (the fixture)
from tests.support.webhook_receiver import WebhookReceiver

ARRAY = build_array(density_per_sq_mi=12, area_sq_mi=2.0, center=(40.46, -79.97),
                    zone="drill-zone", seed=5)
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


async def _shotline(*args: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import app; app()", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def _subscribe(running: Pipeline, url: str, fmt: str) -> None:
    token = running.settings.dispatch.admin_token.get_secret_value()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{running.dispatch_url}/v1/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "name": f"drill test {fmt}", "channel": "webhook", "url": url, "format": fmt,
                "geofence": array_geofence(ARRAY), "classes": ["gunfire", "probable_gunfire"],
                "min_probability": 0.0,
            },
        )
        assert answer.status_code == 201, answer.text


async def test_a_drill_is_delivered_as_an_exercise_and_a_real_shot_meanwhile_as_actual(
    pipeline: Pipeline,  # noqa: F811
    tmp_path: Path,
) -> None:
    tokens = await register_array(pipeline.database_url, ARRAY)
    sensors_file = tmp_path / "sensors.json"
    sensors_file.write_bytes(orjson.dumps([
        {"sensor_id": s.sensor_id, "token": tokens[s.sensor_id], "lat": s.lat, "lon": s.lon,
         "alt_m": s.alt_m}
        for s in ARRAY.sensors
    ]))
    with WebhookReceiver() as cad:
        await _subscribe(pipeline, cad.url("/json"), "json")
        await _subscribe(pipeline, cad.url("/cap"), "cap")

        # A real shot elsewhere in the array, fired while the drill runs.
        real = scenario("shot", ARRAY, start=datetime.now(UTC) - timedelta(seconds=9),
                        rng=np.random.default_rng(23))

        async def fire_real() -> None:
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient(timeout=10) as http:
                for r in real.detections:
                    answer = await http.post(
                        f"{pipeline.ingest_url}/v1/detections",
                        headers={"Authorization": f"Bearer {tokens[r.sensor_id]}"},
                        json={"detections": [to_detection_in(r)]},
                    )
                    assert answer.status_code == 202, answer.text

        truth_file = tmp_path / "truth.json"
        (code, _, err), _ = await asyncio.gather(
            _shotline("drill", "--ingest", pipeline.ingest_url, "--tokens", str(sensors_file),
                      "--scenario", "shot", "--seed", "4", "--truth", str(truth_file)),
            fire_real(),
        )
        assert code == 0, err
        truth = orjson.loads(truth_file.read_bytes())
        assert truth["exercise"] is True and truth["statuses"].get("accepted", 0) >= 4

        await cad.until(4, timeout_s=40)  # two incidents, each in two formats
        await asyncio.sleep(1.0)  # nothing further (a second, different alert) arrives
        json_alerts = cad.received("/json")
        cap_alerts = [ET.fromstring(r.body) for r in cad.received("/cap")]
        by_exercise = {r.json()["data"]["exercise"]: r for r in json_alerts}
        assert sorted(by_exercise) == [False, True], [r.json()["data"] for r in json_alerts]
        assert by_exercise[True].headers.get("shotline-exercise") == "true"
        assert "shotline-exercise" not in by_exercise[False].headers
        statuses = sorted(a.findtext(f"{CAP}status") or "" for a in cap_alerts)
        assert statuses == ["Actual", "Exercise"]
        drill_cap = next(a for a in cap_alerts if a.findtext(f"{CAP}status") == "Exercise")
        drill_id = by_exercise[True].json()["data"]["incident_id"]
        assert drill_cap.findtext(f"{CAP}incidents") == drill_id

        capture = tmp_path / "capture.jsonl"
        capture.write_bytes(b"".join(
            orjson.dumps({
                "received_at": format_time(datetime.fromtimestamp(r.received_at, UTC)),
                "body": r.json(),
            }) + b"\n"
            for r in json_alerts
        ))
    code, out, err = await _shotline("drill", "score", "--truth", str(truth_file),
                                     "--alerts", str(capture))
    assert code == 0, err
    report = orjson.loads(out)
    assert report["gunfire_events"] == 1 and report["detected"] == 1, report
    assert report["not_marked_exercise"] == 0 and report["false_alerts"] == 0
    assert report["real_alerts_meanwhile"] == 1
    assert report["events"][0]["location_error_m"] < 25
    assert 0 < report["events"][0]["latency_s"] < 30
