"""Services started one by one, as a new user does from the README: real processes, the
session's PostgreSQL, a real embedded broker started by ``shotline infra``.

A service run alone with ``KAFKA_BOOTSTRAP_SERVERS`` unset joins the broker that
``shotline infra`` (or ``shotline run``) published in the data directory, or refuses to
start with one line; it never accepts detections into a private broker nobody reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from shared.embedded import free_port
from shared.runtime import STATE_FILE
from tests.integration.ingest.conftest import read_topic
from tests.support.processes import kill_leftovers

CLI = [sys.executable, "-c", "from services.cli import app; app()"]
TOPIC_ENV = {"SHOTLINE_DETECTIONS_TOPIC": "first-hour.detections", "SHOTLINE_TOPIC_PARTITIONS": "1"}


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no broker or database configured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL") and not k.startswith("SHOTLINE_")
    }
    return {**env, "SHOTLINE_DATA_DIR": str(data_dir), "COLUMNS": "250", **TOPIC_ENV, **extra}


async def _run(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"`shotline {' '.join(args)}` still running: {err.decode()[-800:]}"
        ) from None
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("service", ["ingest", "locator", "dispatch"])
async def test_a_service_run_alone_refuses_in_one_line_naming_the_setting(
    service: str, tmp_path: Path, database_url: str
) -> None:
    env = _env(
        tmp_path,
        DATABASE_URL=database_url,
        SHOTLINE_DISPATCH_ADMIN_TOKEN="first-hour-admin-token-0123",
        SHOTLINE_INGEST_PORT=str(free_port()),
        SHOTLINE_DISPATCH_PORT=str(free_port()),
        SHOTLINE_LOCATOR_METRICS_PORT="-1",
    )
    code, _, err = await _run(env, service, timeout_s=45)
    lines = [line for line in err.splitlines() if line.strip() and '"level":"INFO"' not in line]
    assert code == 2, err[-1500:]
    assert len(lines) == 1, err[-1500:]
    assert lines[0].startswith("error: KAFKA_BOOTSTRAP_SERVERS is unset")
    assert "shotline infra" in lines[0]
    assert "Traceback" not in err


async def test_ingest_and_the_cli_join_the_infrastructure_that_shotline_infra_runs(
    tmp_path: Path, database_url: str
) -> None:
    """`shotline infra` (with the session's database) publishes its broker; `shotline
    sensors add` and `shotline ingest`, configured with nothing, use that broker and that
    database: a detection posted to ingest is on the infrastructure's topic."""
    infra = await asyncio.create_subprocess_exec(
        *CLI,
        "infra",
        env=_env(tmp_path, DATABASE_URL=database_url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    ingest = None
    try:
        state_file = tmp_path / STATE_FILE
        for _ in range(300):
            if state_file.exists() or infra.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert state_file.exists(), "shotline infra published nothing"
        state = json.loads(state_file.read_text())
        assert state["database_url"] == database_url
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"

        env = _env(tmp_path)  # neither KAFKA_BOOTSTRAP_SERVERS nor DATABASE_URL
        code, token, err = await _run(
            env, "sensors", "add", "s-0042", "--zone", "pgh-downtown",
            "--lat", "40.4406", "--lon", "-79.9959", "--alt-m", "210",
        )  # fmt: skip
        assert code == 0, err
        port = free_port()
        ingest = await asyncio.create_subprocess_exec(
            *CLI,
            "ingest",
            env={**env, "SHOTLINE_INGEST_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        detection = {
            "detection_id": "s-0042-000001",
            "sensor_id": "s-0042",
            "arrival_time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "peak_db": 128.5,
            "snr_db": 31,
            "rise_time_ms": 0.4,
            "duration_ms": 2.1,
            "spectral_centroid_hz": 1850,
        }
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(300):
                assert ingest.returncode is None, (await ingest.stderr.read()).decode()[-1500:]  # type: ignore[union-attr]
                try:
                    answer = await http.post(
                        f"http://127.0.0.1:{port}/v1/detections",
                        json={"detections": [detection]},
                        headers={"Authorization": f"Bearer {token.strip()}"},
                    )
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        assert answer.status_code == 202, answer.text
        on_topic = await read_topic(
            state["bootstrap_servers"], TOPIC_ENV["SHOTLINE_DETECTIONS_TOPIC"], 1
        )
        assert [r.detection_id for _, r in on_topic] == ["s-0042-000001"]
        assert on_topic[0][1].position.alt_m == 210
    finally:
        await kill_leftovers(ingest)
        if infra.returncode is None:
            infra.send_signal(signal.SIGINT)
            await asyncio.wait_for(infra.wait(), 20)
    assert not (tmp_path / STATE_FILE).exists(), "the state file is removed at exit"


@pytest.mark.parametrize("service", ["ingest", "locator", "dispatch"])
async def test_a_broker_that_does_not_answer_is_one_line_after_a_bounded_wait(
    service: str, tmp_path: Path, database_url: str
) -> None:
    closed = free_port()  # nothing listens there
    env = _env(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed}",
        SHOTLINE_KAFKA_CONNECT_TIMEOUT_S="1.5",
        DATABASE_URL=database_url,
        SHOTLINE_DISPATCH_ADMIN_TOKEN="first-hour-admin-token-0123",
        SHOTLINE_INGEST_PORT=str(free_port()),
        SHOTLINE_DISPATCH_PORT=str(free_port()),
        SHOTLINE_LOCATOR_METRICS_PORT="-1",
    )
    code, _, err = await _run(env, service, timeout_s=45)
    lines = [line for line in err.splitlines() if line.strip() and '"level":"INFO"' not in line]
    assert code == 2, err[-1500:]
    assert lines == [
        f"error: Kafka at 127.0.0.1:{closed} did not answer within 1.5 s ([Errno 111] Connect "
        f"call failed ('127.0.0.1', {closed})); is it running? (KAFKA_BOOTSTRAP_SERVERS)"
    ], err[-1500:]
