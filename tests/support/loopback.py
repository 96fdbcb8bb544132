"""Serve a tiny Starlette app on ``127.0.0.1:<free port>`` in a daemon thread (uvicorn).

The base of the loopback stand-ins in :mod:`tests.support.push_receivers` and
:mod:`tests.support.webhook_receiver`. The server runs on its own thread and event loop, so
the code under test (on the test's event loop) talks to it over real HTTP, and a handler that
hangs never blocks the test. ``start()`` returns once the port accepts connections;
``stop()`` releases hanging handlers and joins the thread (bounded). Also a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route


class LoopbackServer:
    """Subclasses provide :meth:`routes`; recorded state is guarded by ``self._lock``."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()  # wakes hanging handlers at stop()/release()
        self.port = 0

    def routes(self) -> list[Route]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Self:
        """Bind a free port and serve; returns once the server accepts connections.

        Raises ``RuntimeError`` if it is not up within ``timeout_s``.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._release.clear()
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            daemon=True,
            name=f"{type(self).__name__}:{self.port}",
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Release hanging handlers, shut down, join the thread (at most ``timeout_s``)."""
        self._release.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _wait_released(self, limit_s: float | None = None) -> None:
        """Sleep until stop()/release or ``limit_s`` (handlers run on the server's loop)."""
        deadline = None if limit_s is None else time.monotonic() + limit_s
        while not self._release.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.02)

    async def _until(self, count: Callable[[], int], n: int, timeout_s: float) -> None:
        """Wait (without blocking the caller's loop) until ``count() >= n``; else TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{type(self).__name__}: got {count()} of {n} within {timeout_s}s"
                )
            await asyncio.sleep(0.01)


@contextlib.contextmanager
def running(*servers: LoopbackServer) -> Iterator[Any]:
    """Start several servers for a ``with`` block (yields them as a tuple, in order); stop
    them all afterwards. Typed ``Any`` so ``as (webpush, fcm)`` keeps the subclasses."""
    started: list[LoopbackServer] = []
    try:
        for server in servers:
            started.append(server.start())
        yield servers
    finally:
        for server in reversed(started):
            server.stop()
