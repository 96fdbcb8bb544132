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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

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


def run_pipeline(*, demo: bool = False, demo_every_s: float = 8.0) -> None:
    """``shotline run``: blocks until SIGTERM/SIGINT or until a component keeps failing.

    Raises PipelineFailed in the latter case, EmbeddedStartError if an embedded server cannot
    start, pydantic.ValidationError on bad settings.
    """
    from rich.console import Console

    from services.pipeline import Pipeline, PipelineSettings
    from shared.logging import configure_logging
    from shared.runtime import infrastructure, tune_gc_for_latency, wait_for_signal

    console = Console(stderr=True)
    settings = PipelineSettings.from_env()
    if demo:
        settings = _allow_demo_receiver(settings)
    configure_logging(settings.ingest.log_level)
    with infrastructure(settings.ingest) as infra:

        async def _main() -> None:
            pipeline = Pipeline(settings, infra.bootstrap_servers, infra.database_url)
            await pipeline.start()
            _print_banner(console, pipeline, infra, settings.generated_admin_token)
            tune_gc_for_latency()
            background: list[asyncio.Task[None]] = []
            if demo:
                from services.demo import run_demo

                background.append(asyncio.create_task(run_demo(pipeline, console, demo_every_s)))
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

        asyncio.run(_main())


def _allow_demo_receiver(settings: PipelineSettings) -> PipelineSettings:
    """The settings with loopback added to dispatch's allowed target networks: the demo's CAD
    receiver listens on 127.0.0.1, which dispatch otherwise refuses (see
    ``services.dispatch.targets``)."""
    dispatch = settings.dispatch
    loopback = ipaddress.ip_network("127.0.0.0/8")
    if loopback in dispatch.allowed_target_networks:
        return settings
    allowed = (*dispatch.allowed_target_networks, loopback)
    return dataclasses.replace(
        settings, dispatch=dispatch.model_copy(update={"allowed_target_networks": allowed})
    )


def _print_banner(
    console: object, pipeline: object, infra: object, admin_token: str | None
) -> None:
    from rich.console import Console

    assert isinstance(console, Console)
    kafka = infra.bootstrap_servers  # type: ignore[attr-defined]
    memory = " [bold yellow](embedded, IN-MEMORY: lost on exit)[/]" if infra.embedded_kafka else ""  # type: ignore[attr-defined]
    console.print("[bold]Shotline is running[/] (Ctrl-C to stop)")
    console.print(f"  ingest    {pipeline.ingest_url}/docs")  # type: ignore[attr-defined]
    console.print(f"  dispatch  {pipeline.dispatch_url}/docs")  # type: ignore[attr-defined]
    console.print(f"  kafka     {kafka}{memory}")
    database = (
        "embedded PostgreSQL in .shotline/pgdata" if infra.embedded_postgres else "DATABASE_URL"
    )  # type: ignore[attr-defined]
    console.print(f"  database  {database}")
    if admin_token:
        console.print(f"  dispatch admin token (generated for this run): {admin_token}")
