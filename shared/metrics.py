"""Prometheus helpers shared by the services (each service defines its metrics in its own
``metrics.py``, in its own registry; this module only builds registries and exposes them).

* :func:`service_registry` — a registry of one service's metrics (plus the process's own);
  ``shotline run`` hosts three services in one process and each ``/metrics`` must show only
  its service's counters, or every sum on a dashboard counts the process three times;
* :func:`metrics_response` — the body and content type for a ``GET /metrics`` route;
* :class:`MetricsServer` — a stoppable ``/metrics`` listener for services without HTTP
  (the locator), started and stopped with the service; with a readiness check it also
  answers ``/readyz``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)


def service_registry() -> CollectorRegistry:
    """A new registry holding the process collectors (CPU, memory, GC, Python version).

    The process collectors describe the process, not the service: under ``shotline run``
    all three services show the same process figures (sum them by instance, not by job).
    """
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def metrics_response(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition of ``registry`` (one service's metrics) and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsServer:
    """``/metrics`` of ``registry`` on ``host:port`` in a daemon thread; ``port=0`` = free."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        """``ready()`` (called in the server's thread) returns named checks; ``/readyz``
        answers 200 when every one is ``"ok"``, else 503."""
        self.host, self.port, self.registry = host, port, registry
        self._ready = ready
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server, thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        if self._ready is not None:
            server.set_app(_with_readyz(server.get_app(), self._ready))
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _with_readyz(app: Any, ready: Callable[[], dict[str, str]]) -> Any:
    def readyz_or_metrics(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            return app(environ, start_response)  # type: ignore[no-any-return]
        checks = ready()
        ok = all(value == "ok" for value in checks.values())
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json")],
        )
        return [json.dumps(checks).encode()]

    return readyz_or_metrics
