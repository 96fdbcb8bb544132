"""What every ``main`` needs: resolve the infrastructure (embedded when unset), wait for a signal.

Signals are handled here and only for ``main`` functions; services themselves expose
``start()``/``stop(timeout_s)`` and know nothing about signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from shared.db import migrate_url
from shared.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedStartError
from shared.kafka import broker_reachable
from shared.settings import CommonSettings

log = logging.getLogger("shotline")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self, timeout_s: float = 10.0) -> None: ...


@dataclass(frozen=True)
class Infrastructure:
    bootstrap_servers: str
    database_url: str
    embedded_kafka: bool  # started by this process
    embedded_postgres: bool  # started (or attached to) by this process
    joined: InfraState | None = None  # the infrastructure another command published


class InfrastructureMissing(EmbeddedStartError):
    """A service run alone found no broker to join and may not start a private one."""


#: Written into the data directory by the command that runs the embedded infrastructure.
STATE_FILE = "infra.json"


@dataclass(frozen=True)
class InfraState:
    """What ``shotline run`` / ``shotline infra`` publish so that services run one by one
    (``shotline ingest``, ``locator``, ``dispatch``, the sensor CLI) join the same broker and
    database instead of starting private ones that nobody else reads."""

    bootstrap_servers: str
    database_url: str
    pid: int
    command: str


def state_path(data_dir: Path) -> Path:
    return data_dir / STATE_FILE


def read_state(data_dir: Path) -> InfraState | None:
    """The published infrastructure, if its process still runs and its broker answers;
    None otherwise (no file, a file left by a process that died, or an unreadable one)."""
    try:
        raw = json.loads(state_path(data_dir).read_text())
        state = InfraState(
            bootstrap_servers=str(raw["bootstrap_servers"]),
            database_url=str(raw["database_url"]),
            pid=int(raw["pid"]),
            command=str(raw["command"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    if not broker_reachable(state.bootstrap_servers):
        return None
    return state


def _write_state(data_dir: Path, state: InfraState) -> None:
    """Atomically, readable by this user only (the database URL may hold a password)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_path(data_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dataclasses.asdict(state), out)
    os.replace(tmp, state_path(data_dir))


def _remove_state(data_dir: Path, pid: int) -> None:
    """Remove the state file if it is still this process's."""
    current = state_path(data_dir)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(current.read_text())["pid"]) == pid:
            current.unlink()


def missing_broker_message(data_dir: Path) -> str:
    return (
        "KAFKA_BOOTSTRAP_SERVERS is unset and no `shotline run` or `shotline infra` is "
        f"running with data directory {data_dir}: start `shotline infra` in another terminal "
        "(same directory, or the same SHOTLINE_DATA_DIR), or set KAFKA_BOOTSTRAP_SERVERS"
    )


@contextlib.contextmanager
def infrastructure(
    settings: CommonSettings,
    *,
    need_kafka: bool = True,
    need_database: bool = True,
    host: str | None = None,
) -> Iterator[Infrastructure]:
    """The broker and database to use, for the duration.

    Configured ones (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) come first. Else the
    infrastructure that ``shotline run`` or ``shotline infra`` published in the data
    directory (:data:`STATE_FILE`) is joined. Else only a ``host`` (the command that runs
    the embedded infrastructure: ``"shotline run"``, ``"shotline infra"``) starts an
    embedded broker, and publishes what it started for the others; a service run alone
    raises :class:`InfrastructureMissing` rather than accept detections into a private
    broker that no other service reads. A database is always found: with none configured
    or published, embedded PostgreSQL is started (or attached to) in the data directory.

    Raises EmbeddedStartError (with what to do) when an embedded server cannot start.
    """
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    data_dir = settings.data_dir
    published = False
    state: InfraState | None = None
    if (need_kafka and not settings.kafka_bootstrap_servers) or (
        need_database and not settings.database_url
    ):
        state = read_state(data_dir)
    try:
        bootstrap = settings.kafka_bootstrap_servers or ""
        if need_kafka and not bootstrap:
            if state is not None:
                bootstrap = state.bootstrap_servers
                log.info(
                    f"KAFKA_BOOTSTRAP_SERVERS unset: joining the broker of `{state.command}`",
                    extra={"bootstrap_servers": bootstrap, "pid": state.pid},
                )
            elif host is None:
                raise InfrastructureMissing(missing_broker_message(data_dir))
            else:
                kafka = EmbeddedKafka().start()
                bootstrap = kafka.bootstrap_servers
                log.info(  # the host's banner says it in bold on the screen
                    "KAFKA_BOOTSTRAP_SERVERS unset: started an embedded broker with an "
                    "IN-MEMORY log (everything on it is lost when this process stops)",
                    extra={"bootstrap_servers": bootstrap},
                )
        dsn = settings.database_url or ""
        if need_database and not dsn:
            if state is not None:
                dsn = state.database_url
            else:
                postgres = EmbeddedPostgres(data_dir / "pgdata").start()
                dsn = postgres.dsn
                log.info("DATABASE_URL unset: using embedded PostgreSQL", extra={"dsn": dsn})
        if host is not None and state is None and kafka is not None:
            _write_state(data_dir, InfraState(bootstrap, dsn, os.getpid(), host))
            published = True
        yield Infrastructure(
            bootstrap, dsn, kafka is not None, postgres is not None, joined=state
        )
    finally:
        if published:
            _remove_state(data_dir, os.getpid())
        if kafka is not None:
            kafka.stop()
        if postgres is not None:
            postgres.stop()


async def wait_for_signal() -> str:
    """Block until SIGTERM or SIGINT; returns the signal's name."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: received.done() or received.set_result(s.name))
    try:
        return await received
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


#: Middle-generation collections run after this many young ones (CPython: 10).
MIDDLE_COLLECTION_EVERY = 3
#: Full collections run after this many collections of the middle generation (CPython: 10).
#: (3,400 x 3 young collections: no more often than 1,000 x 10 were.)
FULL_COLLECTION_EVERY = 3400


def with_database(
    action: Callable[[asyncpg.Pool], Awaitable[Any]], settings: CommonSettings | None = None
) -> Any:
    """Run ``action`` on a small pool of the configured (or joined, or embedded) database,
    migrated first; the one way the command-line tools reach PostgreSQL."""
    with infrastructure(settings or CommonSettings(), need_kafka=False) as infra:

        async def _go() -> Any:
            await migrate_url(infra.database_url)
            pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2)
            try:
                return await action(pool)
            finally:
                await pool.close()

        return asyncio.run(_go())


def tune_gc_for_latency() -> None:
    """Keep the garbage collector's pauses short (call once services started).

    Why: a full collection walks every tracked object. After start-up most of them are
    modules, settings, clients and compiled kernels that live as long as the process (numba
    and pydantic alone make hundreds of thousands): freezing them takes them out of every
    later walk. And a busy locator holds its zones' state (a few hundred thousand objects in
    thousands of zones), which a full collection walks in 0.1-0.2 s while no window closes;
    with CPython's default a full collection ran every few seconds under load (bench: live
    p99 217 ms -> 75 ms with ``FULL_COLLECTION_EVERY``). Nearly all of that state is freed by
    reference counting anyway; full collections only find reference cycles, so running them
    100 times less often costs little memory.

    And the middle generation is collected every ``MIDDLE_COLLECTION_EVERY`` young collections
    instead of 10: it walks what survived the young collections since the last one (a busy
    locator's new state), once each, so collecting it 3.3x as often does the same work in
    pauses a third as long (live locator at 2,000 det/s: middle-generation pauses p99
    20.8 -> 9.8 ms, 25 -> 2 of them over 10 ms, total GC time unchanged).
    """
    gc.collect()
    gc.freeze()
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_COLLECTION_EVERY, FULL_COLLECTION_EVERY)


async def serve_until_signalled(*services: Service, stop_timeout_s: float = 15.0) -> None:
    """Start services in order, wait for SIGTERM/SIGINT, stop them in reverse order."""
    started: list[Service] = []
    try:
        for service in services:
            await service.start()
            started.append(service)
        tune_gc_for_latency()
        name = await wait_for_signal()
        log.info("stopping", extra={"signal": name})
    finally:
        for service in reversed(started):
            await service.stop(stop_timeout_s)
