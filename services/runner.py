"""``shotline run``: the whole pipeline in one process, supervised.

Starts (or uses) the broker and the database, applies migrations, creates the topics, then
starts ingest, locator and dispatch. Each service runs under a :class:`Supervisor` that
restarts it with capped exponential backoff if it fails, so one crashed component does not
take the pipeline down; a component that keeps failing (``max_restarts`` within
``restart_window_s``) stops the whole run with an error instead of flapping forever.

The restart decision is the pure function :func:`restart_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import SecretStr

if TYPE_CHECKING:
    from services.pipeline import PipelineSettings

log = logging.getLogger("shotline.run")


class Supervised(Protocol):
    async def start(self) -> None: ...
    async def stop(self, timeout_s: float = 10.0) -> None: ...


class PipelineFailed(RuntimeError):
    """A component failed more often than the restart budget allows."""


def restart_delay(
    failures: list[float],
    now: float,
    *,
    base_s: float,
    cap_s: float,
    max_restarts: int,
    window_s: float,
) -> float | None:
    """Seconds to wait before restarting after the failure at ``now``; None = give up.

    ``failures`` are earlier failure times (monotonic seconds). Only those within
    ``window_s`` count: a component that ran fine for a while starts again from ``base_s``.
    """
    recent = [t for t in failures if now - t < window_s]
    if len(recent) >= max_restarts:
        return None
    return min(cap_s, base_s * (2 ** len(recent)))


@dataclass
class Component:
    """A named service, how to build it, and how to notice it died (``watch``)."""

    name: str
    build: Callable[[], Supervised]
    watch: Callable[[Supervised], Awaitable[None]] | None = None


@dataclass
class Supervisor:
    components: list[Component]
    base_s: float = 0.5
    cap_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 300.0
    running: dict[str, Supervised] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _failed: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start every component in order (raises if one cannot start at all)."""
        self._failed = asyncio.get_running_loop().create_future()
        for component in self.components:
            service = component.build()
            await service.start()
            self.running[component.name] = service
            log.info("component started", extra={"component": component.name})
            if component.watch is not None:
                self._tasks.append(
                    asyncio.create_task(self._supervise(component, service), name=component.name)
                )

    async def _supervise(self, component: Component, service: Supervised) -> None:
        failures: list[float] = []
        assert component.watch is not None
        while True:
            try:
                await component.watch(service)
                error: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            log.error(
                "component stopped unexpectedly",
                extra={"component": component.name, "error": repr(error)},
            )
            now = time.monotonic()
            delay = restart_delay(
                failures,
                now,
                base_s=self.base_s,
                cap_s=self.cap_s,
                max_restarts=self.max_restarts,
                window_s=self.window_s,
            )
            failures.append(now)
            self.running.pop(component.name, None)
            try:
                await service.stop(5.0)
            except Exception:
                log.exception(
                    "stopping the failed component failed", extra={"component": component.name}
                )
            if delay is None:
                if self._failed is not None and not self._failed.done():
                    self._failed.set_exception(
                        PipelineFailed(f"{component.name} failed {len(failures)} times")
                    )
                return
            await asyncio.sleep(delay)
            service = component.build()
            await service.start()
            self.running[component.name] = service
            log.warning("component restarted", extra={"component": component.name})

    async def failed(self) -> None:
        """Completes (raising PipelineFailed) when a component exhausted its restarts."""
        assert self._failed is not None
        await self._failed

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Stop supervision, then the components in reverse order."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for component in reversed(self.components):
            service = self.running.pop(component.name, None)
            if service is not None:
                await service.stop(timeout_s)


ADMIN_TOKEN_FILE = "admin-token"
RUN_LOG_FILE = "run.log"


def run_pipeline(*, demo: bool = False, demo_every_s: float = 8.0) -> None:
    """``shotline run``: blocks until SIGTERM/SIGINT or until a component keeps failing.

    The screen is for people: the banner, the demo's alerts and warnings. The full JSON log
    goes to ``<data dir>/run.log``. The embedded broker and database are published in the
    data directory (``shared.runtime.STATE_FILE``) so that CLI commands join them.

    Raises PipelineFailed in the latter case, EmbeddedStartError if an embedded server cannot
    start, pydantic.ValidationError on bad settings.
    """
    from rich.console import Console

    from services.locator.warmup import warm_up_kernels
    from services.pipeline import Pipeline, PipelineSettings
    from shared.logging import configure_logging
    from shared.runtime import infrastructure, tune_gc_for_latency, wait_for_signal

    console = Console(stderr=True)
    settings = PipelineSettings.from_env()
    if demo:
        settings = _allow_demo_receiver(settings)
    data_dir = settings.ingest.data_dir
    configure_logging(
        settings.ingest.log_level, log_file=data_dir / RUN_LOG_FILE, console_level="WARNING"
    )
    with _status(console, "starting the broker and the database…"):
        infra_context = infrastructure(settings.ingest, host="shotline run")
        infra = infra_context.__enter__()
    try:

        async def _main() -> None:
            with _status(console, "compiling the locator's kernels (once, ~20 s)…"):
                await asyncio.to_thread(warm_up_kernels)  # cached: the locator's is quick
            pipeline = Pipeline(settings, infra.bootstrap_servers, infra.database_url)
            with _status(console, "starting ingest, locator and dispatch…"):
                await pipeline.start()
            token_file = _write_admin_token(data_dir, settings.generated_admin_token)

            def banner() -> None:
                _print_banner(console, pipeline, infra, data_dir, token_file)

            tune_gc_for_latency()
            background: list[asyncio.Task[None]] = []
            if demo:
                from services.demo import run_demo

                # the banner (the admin token last) once the demo set up, before its alerts
                demo_task = run_demo(pipeline, console, demo_every_s, on_ready=banner)
                background.append(asyncio.create_task(demo_task))
            else:
                banner()
            signal_task = asyncio.create_task(wait_for_signal())
            failure_task = asyncio.create_task(pipeline.failed())
            try:
                done, _ = await asyncio.wait(
                    [signal_task, failure_task, *background], return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # re-raise a failure (PipelineFailed, a demo error)
            finally:
                for task in [signal_task, failure_task, *background]:
                    task.cancel()
                await asyncio.gather(signal_task, failure_task, *background, return_exceptions=True)
                console.print("stopping…")
                await pipeline.stop()
                if token_file is not None:
                    token_file.unlink(missing_ok=True)

        asyncio.run(_main())
    finally:
        infra_context.__exit__(None, None, None)


def run_infra() -> None:
    """``shotline infra``: the embedded broker and database alone, published in the data
    directory, until SIGTERM/SIGINT — for running ``shotline ingest``, ``locator`` and
    ``dispatch`` one by one (each joins them).

    Raises EmbeddedStartError if one is already running there or a server cannot start.
    """
    from rich.console import Console

    from shared.db import migrate_url
    from shared.embedded import EmbeddedStartError
    from shared.logging import configure_logging
    from shared.runtime import infrastructure, read_state, state_path, wait_for_signal
    from shared.settings import CommonSettings

    console = Console(stderr=True)
    settings = CommonSettings()
    configure_logging(settings.log_level, console_level="WARNING")
    running = read_state(settings.data_dir)
    if running is not None:
        raise EmbeddedStartError(
            f"`{running.command}` (pid {running.pid}) already runs the infrastructure of "
            f"{settings.data_dir}: services join it as they are"
        )
    if settings.kafka_bootstrap_servers:
        raise EmbeddedStartError(
            "KAFKA_BOOTSTRAP_SERVERS is set: the services use that broker, there is nothing "
            "to run (unset it to run the embedded one)"
        )
    with (
        _status(console, "starting the broker and the database…"),
        infrastructure(settings, host="shotline infra") as infra,
    ):
        asyncio.run(migrate_url(infra.database_url))
        console.print("[bold]Shotline infrastructure is running[/] (Ctrl-C to stop)")
        console.print(
            f"  kafka     {infra.bootstrap_servers} "
            "[bold yellow](embedded, IN-MEMORY: lost on exit)[/]"
        )
        console.print(f"  database  {_database_line(infra, settings.data_dir)}")
        console.print(
            f"  published in {state_path(settings.data_dir)}: `shotline ingest`, `shotline "
            "locator`, `shotline dispatch` and the CLI started from here join them"
        )
        asyncio.run(wait_for_signal())
        console.print("stopping…")


@contextlib.contextmanager
def _status(console: object, text: str) -> Iterator[None]:
    """A spinner with ``text`` while the block runs, on a terminal; elsewhere (a pipe, a CI
    log) the text as one line, so that a pause is never unexplained."""
    from rich.console import Console

    assert isinstance(console, Console)
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        console.print(text, highlight=False)
        yield


def _write_admin_token(data_dir: Path, token: str | None) -> Path | None:
    """The generated admin token in ``<data dir>/admin-token`` (this user only), so that
    curl examples can read it: ``$(cat .shotline/admin-token)``. Removed at exit."""
    if token is None:
        return None
    path = data_dir / ADMIN_TOKEN_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def _database_line(infra: object, data_dir: Path) -> str:
    if getattr(infra, "embedded_postgres", False):
        return f"embedded PostgreSQL in {data_dir / 'pgdata'}"
    return "DATABASE_URL"


def _allow_demo_receiver(settings: PipelineSettings) -> PipelineSettings:
    """The settings with loopback added to dispatch's allowed target networks: the demo's CAD
    receiver listens on 127.0.0.1, which dispatch otherwise refuses (see
    ``services.dispatch.targets``); and a clip-link secret, so the alerts link the clips
    the simulated sensors upload."""
    dispatch = settings.dispatch
    update: dict[str, object] = {}
    loopback = ipaddress.ip_network("127.0.0.0/8")
    if loopback not in dispatch.allowed_target_networks:
        update["allowed_target_networks"] = (*dispatch.allowed_target_networks, loopback)
    if dispatch.clip_url_secret is None:  # the demo's alerts link the sensors' clips
        update["clip_url_secret"] = SecretStr(secrets.token_hex(16))
        update["public_url"] = f"http://{dispatch.host}:{dispatch.port}"
    if not update:
        return settings
    return dataclasses.replace(settings, dispatch=dispatch.model_copy(update=update))


def _print_banner(
    console: object, pipeline: object, infra: object, data_dir: Path, token_file: Path | None
) -> None:
    """What runs where; the admin token last, where it is seen."""
    from rich.console import Console

    assert isinstance(console, Console)
    kafka = infra.bootstrap_servers  # type: ignore[attr-defined]
    memory = " [bold yellow](embedded, IN-MEMORY: lost on exit)[/]" if infra.embedded_kafka else ""  # type: ignore[attr-defined]
    console.print("[bold]Shotline is running[/] (Ctrl-C to stop)")
    console.print(f"  ingest    {pipeline.ingest_url}/docs")  # type: ignore[attr-defined]
    console.print(f"  dispatch  {pipeline.dispatch_url}/docs")  # type: ignore[attr-defined]
    console.print(f"  kafka     {kafka}{memory}")
    console.print(f"  database  {_database_line(infra, data_dir)}")
    console.print(f"  log       {data_dir / RUN_LOG_FILE}")
    if token_file is not None:
        token = token_file.read_text().strip()
        console.print(
            f"  admin token (generated for this run, also in {token_file}): {token}",
            soft_wrap=True,
        )
    else:
        console.print("  admin token: SHOTLINE_DISPATCH_ADMIN_TOKEN")
