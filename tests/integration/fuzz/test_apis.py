"""A bounded schemathesis run against both real APIs, every check on: no 5xx, no answer
outside its documented schema. Fixed seed and example budget keep it to about a minute."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from services.dispatch.main import DispatchService
from services.dispatch.settings import DispatchSettings
from tests.integration.dispatch.helpers import ADMIN_TOKEN

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261207
MAX_EXAMPLES = 25


async def _fuzz(url: str, token: str, report: Path) -> tuple[int, str, list[dict]]:
    """Run schemathesis on ``url``; returns its exit code, its output and the requests."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--no-color",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "har",
        "--report-har-path",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=report.parent,  # whatever it writes stays out of the work tree
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await asyncio.wait_for(process.communicate(), 240)
    return process.returncode or 0, output.decode(errors="replace"), _har_entries(report)


def _har_entries(report: Path) -> list[dict]:
    """Every request of the run, from schemathesis's HAR report."""
    return json.loads(report.read_text())["log"]["entries"] if report.exists() else []


def _figures(entries: list[dict]) -> tuple[int, int]:
    """Requests sent, and how many were answered 5xx (a readiness probe's 503 excepted)."""
    errors = sum(
        1
        for e in entries
        if e["response"]["status"] >= 500
        and not (e["response"]["status"] == 503 and e["request"]["url"].endswith("/readyz"))
    )
    return len(entries), errors


@pytest.mark.slow
async def test_ingest_survives_a_schemathesis_run_with_every_check(
    start_ingest, register, tmp_path
):
    sensor = await register("s-fuzz")
    ingest = await start_ingest(
        rate_per_sensor_per_s=10_000.0, rate_burst=10_000, readiness_timeout_s=5.0
    )
    code, output, entries = await _fuzz(ingest.url, sensor.token, tmp_path / "ingest.har")
    sent, server_errors = _figures(entries)
    print(f"ingest fuzz: {sent} requests, {server_errors} answered 5xx")
    assert code == 0, output[-6000:]
    assert sent > 100 and server_errors == 0


@pytest.mark.slow
async def test_dispatch_survives_a_schemathesis_run_with_every_check(
    kafka_bootstrap, database_url, topics, tmp_path
):
    settings = DispatchSettings(
        admin_token=ADMIN_TOKEN,
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        incidents_topic=topics.incidents,
        topic_partitions=topics.partitions,
        port=0,
        consume=False,
        workers=False,
        readiness_timeout_s=5.0,
    )
    service = DispatchService(
        settings, bootstrap_servers=kafka_bootstrap, database_url=database_url
    )
    await service.start()
    try:
        code, output, entries = await _fuzz(service.url, ADMIN_TOKEN, tmp_path / "dispatch.har")
    finally:
        await service.stop(5)
    sent, server_errors = _figures(entries)
    print(f"dispatch fuzz: {sent} requests, {server_errors} answered 5xx")
    assert code == 0, output[-6000:]
    assert sent > 300 and server_errors == 0
