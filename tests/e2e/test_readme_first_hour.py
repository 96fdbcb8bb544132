"""The README's first hour, run verbatim in order against a running ``make run``.

Every ``sh`` block from "The first hour" to the API examples is run by bash, as a new user
pastes them into a second terminal: the venv activated from the README's own line, the admin
token from the file ``make run`` wrote, the sensors and subscriptions the README creates. The
only changes are the ports (the test's own free ones instead of 8080/8082) and ``curl -f``
(an HTTP error fails the step instead of printing JSON nobody reads).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from shared.embedded import free_port
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def first_hour_blocks() -> list[str]:
    """The ``sh`` blocks from '### The first hour' up to '### Topics', in order."""
    part = README[README.index("### The first hour") : README.index("### Topics")]
    return re.findall(r"```sh\n(.*?)```", part, flags=re.S)


def test_the_first_hour_covers_the_command_line_and_both_apis() -> None:
    script = "\n".join(first_hour_blocks())
    for command in ("source .venv/bin/activate", "shotline sensors add", "/v1/detections",
                    "/v1/subscriptions", "/v1/incidents?", "/v1/deliveries/replay"):  # fmt: skip
        assert command in script, command
    added = re.findall(r"sensors add (\S+)", script)
    revoked = re.findall(r"sensors revoke (\S+)", script)
    for sensor in revoked:  # a revoked sensor is never added again further down
        assert added.count(sensor) == 1, sensor


async def test_the_readme_commands_work_in_order_against_make_run(
    tmp_path: Path, database_url: str
) -> None:
    ingest_port, dispatch_port = free_port(), free_port()
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHOTLINE_", "KAFKA_")) and k not in ("DATABASE_URL", "VIRTUAL_ENV")
    }
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    env["PYTHONPATH"] = str(REPO_ROOT)
    run_env = {
        **env,
        "DATABASE_URL": database_url,  # saves an embedded PostgreSQL; the CLI finds it anyway
        "SHOTLINE_INGEST_PORT": str(ingest_port),
        "SHOTLINE_DISPATCH_PORT": str(dispatch_port),
        "SHOTLINE_LOCATOR_METRICS_PORT": "-1",
        "SHOTLINE_KAFKA_SESSION_TIMEOUT_MS": "2000",
    }
    pipeline = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import app; app()", "run", "--demo",
        "--demo-every-s", "2",
        cwd=tmp_path, env=run_env, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    screen: list[str] = []
    try:
        assert pipeline.stderr is not None
        deadline = asyncio.get_running_loop().time() + 120
        while not any(line.startswith("ALERT ") for line in screen):
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, "\n".join(screen[-20:])
            raw = await asyncio.wait_for(pipeline.stderr.readline(), remaining)
            assert raw, "make run ended:\n" + "\n".join(screen[-20:])
            screen.append(raw.decode().rstrip("\n"))
        drain = asyncio.create_task(pipeline.stderr.read())  # keep its pipe from filling

        script = "\n".join(first_hour_blocks())
        script = script.replace("127.0.0.1:8080", f"127.0.0.1:{ingest_port}")
        script = script.replace("127.0.0.1:8082", f"127.0.0.1:{dispatch_port}")
        script = script.replace("curl -s ", "curl -sSf ")
        bash = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-x", "-c", script,
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(bash.communicate(), 120)
        transcript = out.decode()
        assert bash.returncode == 0, transcript[-4000:]
        assert '"accepted":1' in transcript, transcript[-4000:]
        assert "whsec_" in transcript
    finally:
        if pipeline.returncode is None:
            pipeline.send_signal(signal.SIGINT)
        await asyncio.wait_for(pipeline.wait(), 30)
    drain.cancel()
    assert pipeline.returncode == 0
