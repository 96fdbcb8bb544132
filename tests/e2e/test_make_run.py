"""``make run`` (``shotline run --demo``) as a new user sees it: a real process, its screen.

The screen shows the banner with the admin token last, then the alerts — one line each with
the incident id, class, rounds, location and latency — and not the HTTP client's request
log; the full JSON log is in the data directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from shared.embedded import free_port

ALERT = re.compile(
    r"^ALERT [0-9a-f-]{36} created v1  (gunfire|probable_gunfire) p=\d\.\d\d  \d+ rounds?  "
    r"at 40\.\d{5},-79\.\d{5} ±\d+ m  \d+\.\d s after the shot(  \d+ clips)?$"
)


async def test_the_demo_screen_shows_the_token_last_then_alert_lines(
    tmp_path: Path, database_url: str
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHOTLINE_", "KAFKA_")) and k != "DATABASE_URL"
    }
    env.update(
        SHOTLINE_DATA_DIR=str(tmp_path),
        DATABASE_URL=database_url,
        SHOTLINE_INGEST_PORT=str(free_port()),
        SHOTLINE_DISPATCH_PORT=str(free_port()),
        SHOTLINE_LOCATOR_METRICS_PORT="-1",
        SHOTLINE_KAFKA_SESSION_TIMEOUT_MS="2000",
        COLUMNS="200",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import app; app()",
        "run", "--demo", "--demo-every-s", "1",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    screen: list[str] = []
    token_while_running = None
    try:
        assert proc.stderr is not None
        deadline = asyncio.get_running_loop().time() + 120
        while not any(ALERT.match(line) for line in screen):
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, "\n".join(screen[-30:])
            raw = await asyncio.wait_for(proc.stderr.readline(), remaining)
            assert raw, "shotline run ended:\n" + "\n".join(screen[-30:])
            screen.append(raw.decode().rstrip("\n"))
            if token_while_running is None and (tmp_path / "admin-token").exists():
                token_while_running = (tmp_path / "admin-token").read_text().strip()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.communicate(), 30)
    screen += rest[1].decode().splitlines()
    assert proc.returncode == 0, "\n".join(screen[-30:])

    assert not any("HTTP Request" in line for line in screen), "httpx's request log on screen"
    assert not any(line.startswith("{") for line in screen), "JSON log lines on the screen"
    banner_end = next(i for i, line in enumerate(screen) if "admin token" in line)
    compiling = screen.index("compiling the locator's kernels (once, ~20 s)…")
    assert compiling < screen.index("Shotline is running (Ctrl-C to stop)") < banner_end
    assert screen[banner_end - 1].startswith("  log ")
    assert token_while_running and screen[banner_end].endswith(token_while_running)
    assert str(tmp_path / "admin-token") in screen[banner_end]
    after = screen[banner_end + 1 :]
    assert after and all(line.startswith(("simulated ", "ALERT ", "stopping")) for line in after), (
        "the token is the last line before the demo's situations and alerts"
    )
    assert not (tmp_path / "admin-token").exists(), "the run's token file goes with the run"
    assert '"incident published"' in (tmp_path / "run.log").read_text()
