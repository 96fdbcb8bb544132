"""``shotline sensor`` as an operator runs it: a real process, a real ingest."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from services.sensor.sources import device_unavailable_reason
from tests.integration.ingest.conftest import FrozenClock
from tests.integration.sensor.test_resend import NOW, ONSETS
from tests.support.audio import impulses, write_clip

REPO = Path(__file__).resolve().parents[3]


async def shotline(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_replaying_a_file_posts_its_onsets_and_says_what_ingest_answered(
    start_ingest, register, tmp_path
):
    sensor = await register("roof-cli")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    token = tmp_path / "token"
    token.write_text(sensor.token + "\n")
    wav = write_clip(tmp_path / "roof.wav", impulses(ONSETS, 6.0), NOW - timedelta(seconds=8))
    env = {"SHOTLINE_SENSOR_QUEUE_PATH": str(tmp_path / "q.sqlite3")}
    args = ("sensor", "--sensor-id", "roof-cli", "--token-file", str(token),
            "--ingest", ingest.url, "--wav", str(wav))
    code, out = await shotline(*args, env=env)
    assert code == 0, out
    assert "3 onsets; ingest accepted 3, duplicate 0, rejected 0" in out
    code, out = await shotline(*args, env=env)
    assert "accepted 0, duplicate 3" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--token-file", "/nonexistent/token", "--wav", "x.wav"), "--token-file"),
        (("--wav", "/nonexistent.wav"), "no such file"),
        (("--device", "hw:0", "--wav", "x.wav"), "either --wav/--flac files"),
        (("--wav", "{wav}", "--start", "yesterday"), "--start 'yesterday'"),
    ],
)
async def test_an_operator_mistake_is_one_line_naming_it(tmp_path, args, message) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    wav = write_clip(tmp_path / "a.wav", impulses([], 0.2), NOW)
    base = ["--sensor-id", "s-1", "--ingest", "http://127.0.0.1:9"]
    if "--token-file" not in args:
        base += ["--token-file", str(token)]
    code, out = await shotline("sensor", *base, *(a.replace("{wav}", str(wav)) for a in args))
    assert code == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out


async def test_a_live_device_run_without_a_device_says_so_in_one_line(tmp_path) -> None:
    reason = device_unavailable_reason(None)
    if reason is None:
        pytest.skip("this machine has an audio input device: the no-device message is not shown")
    token = tmp_path / "token"
    token.write_text("t")
    code, out = await shotline("sensor", "--sensor-id", "s-1", "--token-file", str(token),
                               "--ingest", "http://127.0.0.1:9", "--device", "default")
    assert code == 2
    assert out.strip().splitlines() == [f"error: {reason}"]


async def test_a_live_device_is_read(tmp_path) -> None:
    reason = device_unavailable_reason(None)
    if reason is not None:
        pytest.skip(f"live-device run skipped: {reason}")
    from services.sensor.main import run_device
    from services.sensor.settings import SensorSettings

    settings = SensorSettings(queue_path=tmp_path / "q.sqlite3", drain_timeout_s=0.5)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.5, stop.set)
    counts = await run_device(settings, sensor_id="s-1", token="t",
                              ingest_url="http://127.0.0.1:9", device=None,
                              sample_rate=12_000, stop=stop)
    assert counts.samples > 6000
