"""Prometheus helpers shared by the services (each service defines its metrics in its own
``metrics.py``, in its own registry; this module only builds registries and exposes them).

* :func:`service_registry` — a registry of one service's metrics (plus the process's own);
  ``shotline run`` hosts three services in one process and each ``/metrics`` must show only
  its service's counters, or every sum on a dashboard counts the process three times;
* :func:`metrics_response` — the body and content type for a ``GET /metrics`` route;
* :class:`MetricsServer` — a stoppable ``/metrics`` listener for services without HTTP
  (the locator), started and stopped with the service.
"""

from __future__ import annotations

import threading
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

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host, self.port, self.registry = host, port, registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server, thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
