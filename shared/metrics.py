"""Prometheus helpers shared by the services (each service defines its metrics in its own
``metrics.py``; this module only exposes them).

* :func:`metrics_response` — the body and content type for a ``GET /metrics`` route;
* :class:`MetricsServer` — a stoppable ``/metrics`` listener for services without HTTP
  (the locator), started and stopped with the service.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server


def metrics_response() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


class MetricsServer:
    """``/metrics`` on ``host:port`` in a daemon thread; ``port=0`` picks a free port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server, thread = start_http_server(self.port, addr=self.host)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
