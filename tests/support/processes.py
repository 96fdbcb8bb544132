"""Shotline services run as real processes (``shotline <service>``), for tests that kill them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping


async def start_service(service: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """``shotline <service>`` in a child process with ``env``; stderr is kept, stdout dropped.

    Returns at once (the caller waits for the service to be ready its own way)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import app; app()", service,
        env=dict(env), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )


async def stop_cleanly(process: asyncio.subprocess.Process, timeout_s: float = 30) -> None:
    """SIGTERM, then assert the process exited 0 within ``timeout_s`` (its stderr tail in
    the failure message)."""
    process.terminate()
    _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode == 0, stderr.decode()[-2000:]


async def kill_leftovers(*processes: asyncio.subprocess.Process | None) -> None:
    """SIGKILL and reap every process still running (a test's ``finally``)."""
    for process in processes:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
