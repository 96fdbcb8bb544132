"""A programmable webhook receiver: a real loopback HTTP server for delivery tests.

It records every request (method, path, lower-cased headers, body, arrival time) and answers
from a per-path script of :class:`Reply` objects - status, headers (e.g. ``Retry-After``),
body, a delay (a slow receiver) or ``hang`` (never answers until :meth:`release` /
``stop()``) - falling back to a default reply (200) when the script is used up::

    with WebhookReceiver() as receiver:
        receiver.statuses("/hook", 503, 503, 200, retry_after="1")
        ... deliver to receiver.url("/hook") ...
        await receiver.until(3, path="/hook")
        for request in receiver.received("/hook"):
            Webhook(secret).verify(request.body, request.headers)

``WebhookReceiver(default=Reply(hang=True))`` is a receiver that hangs on everything;
``in_flight`` / ``max_in_flight`` show how many requests were open at once (per-endpoint
concurrency limits). It runs on its own thread (:class:`~tests.support.loopback.
LoopbackServer`): async tests wait with ``await receiver.until(n)``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.loopback import LoopbackServer


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``hang``: never answer (until stop/release); ``delay_s``: answer
    late (the request is recorded on arrival either way)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    hang: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float  # time.time() on arrival

    def json(self) -> Any:
        return orjson.loads(self.body)


class WebhookReceiver(LoopbackServer):
    """A programmable webhook endpoint; any path, POST/PUT.

    ``script(path, *replies)`` queues replies for one path (``"*"``: any path without its own
    queue); when a queue is empty the ``default`` reply (200) is used.
    """

    def __init__(self, default: Reply | None = None) -> None:
        super().__init__()
        self.default = default or Reply()
        self._scripts: dict[str, deque[Reply]] = {}
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", self._handle, methods=["POST", "PUT"])]

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    def script(self, path: str, *replies: Reply) -> None:
        """Queue ``replies`` for ``path`` (after any still queued)."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def statuses(self, path: str, *codes: int, retry_after: str | None = None) -> None:
        """Shorthand: queue bare status replies; ``retry_after`` goes on 429/503 replies."""
        self.script(
            path,
            *(
                Reply(
                    code, {"Retry-After": retry_after} if retry_after and code in (429, 503) else {}
                )
                for code in codes
            ),
        )

    def release(self) -> None:
        """Let hanging handlers answer (with their scripted status) and stop hanging."""
        self._release.set()

    def received(self, path: str | None = None) -> list[RecordedRequest]:
        """A snapshot of the requests so far (all paths, or one)."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    async def until(self, n: int, timeout_s: float = 5.0, path: str | None = None) -> None:
        """Wait until ``n`` requests arrived (on ``path``); raises TimeoutError."""
        await self._until(lambda: len(self.received(path)), n, timeout_s)

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            for key in (path, "*"):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
            return self.default

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = await request.body()
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    path,
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                    time.time(),
                )
            )
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self._next_reply(path)
            if reply.hang:
                await self._wait_released()
            elif reply.delay_s > 0:
                await self._wait_released(reply.delay_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        return Response(reply.body, status_code=reply.status, headers=reply.headers)
