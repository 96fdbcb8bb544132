"""Dispatch wiring: the embeddable :class:`DispatchService` and ``run(settings)``.

One instance = the incidents consumer (Kafka → Postgres outbox), the delivery workers
(outbox → receivers) and the admin API (uvicorn). Several instances share the database and
the consumer group: Kafka splits the partitions, ``SKIP LOCKED`` splits the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import httpx
import uvicorn

from services.dispatch import holds
from services.dispatch.api import ApiState, create_app
from services.dispatch.console.feed import ConsoleFeed
from services.dispatch.consumer import IncidentConsumer, make_planner
from services.dispatch.delivery import DeliveryWorkers
from services.dispatch.places import PlaceIndex
from services.dispatch.settings import DispatchSettings
from services.oversight.retention import run_retention
from services.oversight.settings import OversightSettings
from shared.clock import Clock, utc_now
from shared.db import create_pool, migrate_url
from shared.kafka import dead_letter_topic, ensure_topics, wait_for_broker
from shared.logging import configure_logging
from shared.runtime import infrastructure, serve_until_signalled

log = logging.getLogger("shotline.dispatch")
#: Seconds after start of the first retention run.
RETENTION_FIRST_RUN_S = 60.0


class DispatchService:
    """``await start()`` … ``await stop(timeout_s)``; ``watch()`` ends if the consumer dies."""

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        bootstrap_servers: str,
        database_url: str,
        clock: Clock = utc_now,
        http: httpx.AsyncClient | None = None,
        oversight: OversightSettings | None = None,
    ) -> None:
        self.settings = settings
        self.oversight = OversightSettings() if oversight is None else oversight
        self._retention_task: asyncio.Task[None] | None = None
        self.bootstrap_servers = bootstrap_servers
        self.database_url = database_url
        self.clock = clock
        self._http = http
        self.pool: asyncpg.Pool | None = None
        self.consumer: IncidentConsumer | None = None
        self.workers: DeliveryWorkers | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self.places = PlaceIndex()
        self._places_task: asyncio.Task[None] | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self.plan = make_planner(clock)
        self.gate = holds.make_gate(self.plan, settings.gate_settings(), clock)
        self.feed: ConsoleFeed | None = None

    @property
    def port(self) -> int:
        if self._server is not None:
            for server in getattr(self._server, "servers", []):
                for sock in server.sockets:
                    return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect, start consumer, workers and API. Raises if any cannot start."""
        await wait_for_broker(
            self.bootstrap_servers, timeout_s=min(timeout_s, self.settings.kafka_connect_timeout_s)
        )
        topic = self.settings.incidents_topic
        await ensure_topics(
            self.bootstrap_servers,
            {topic: self.settings.topic_partitions, dead_letter_topic(topic): 1},
            connection=self.settings.kafka_connection(),
        )
        self.pool = await create_pool(self.database_url, max_size=self.settings.db_pool_size)
        try:
            if self.settings.workers:
                self.workers = DeliveryWorkers(
                    self.settings,
                    pool=self.pool,
                    database_url=self.database_url,
                    http=self._http,
                    clock=self.clock,
                )
                await self.workers.start()
            if self.settings.consume:
                # The city's layers are in memory before the first incident is read (a layer
                # that cannot be indexed is logged: alerts then go out without place words).
                await self.places.try_refresh(self.pool)
                self._places_task = asyncio.create_task(
                    self.places.run(
                        self.pool, self.database_url, self.settings.places_refresh_s
                    ),
                    name="dispatch-places",
                )
                self.consumer = IncidentConsumer(
                    self.settings,
                    bootstrap_servers=self.bootstrap_servers,
                    pool=self.pool,
                    plan=self.plan,
                    places=self.places,
                    gate=self.gate,
                )
                await self.consumer.start()
                self._consumer_task = asyncio.create_task(
                    self.consumer.run(), name="dispatch-consumer"
                )
            self._sweep_task = asyncio.create_task(self._sweep(), name="dispatch-sweep")
            self.feed = ConsoleFeed(self.pool)
            await self.feed.start()
            await self._start_api(timeout_s)
            if self.oversight.retention_interval_s > 0:
                self._retention_task = asyncio.create_task(
                    self._retention_loop(), name="dispatch-retention"
                )
        except BaseException:
            await self.stop(5.0)
            raise

    async def _sweep(self) -> None:
        """Review deadlines and silence ends, every ``sweep_interval_s`` (any instance may
        do it: a decision is a version, stored once; a release locks its holds)."""
        assert self.pool is not None
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                now = self.clock()
                await holds.pass_deadlines(self.pool, now=now, plan=self.plan, gate=self.gate)
                await holds.release_silences(
                    self.pool, now=now, plan=self.plan, settings=self.settings.gate_settings()
                )
                await holds.refresh_queue_gauges(self.pool, now)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                log.warning("review/silence sweep failed; retrying", exc_info=True)

    async def _start_api(self, timeout_s: float) -> None:
        assert self.pool is not None
        state = ApiState(self.settings, self.pool, self.bootstrap_servers, self.clock)
        state.plan, state.gate, state.feed = self.plan, self.gate, self.feed
        app = create_app(state)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server_task = asyncio.create_task(self._server.serve(), name="dispatch-api")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
                raise RuntimeError("dispatch API stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("dispatch API did not start in time")
            await asyncio.sleep(0.02)

    async def _retention_loop(self) -> None:
        """Run retention a minute after start (a service restarted often still runs it),
        then every ``retention_interval_s``. A failed run is logged and tried next time:
        the rows stay due, nothing is lost by waiting."""
        delay = min(RETENTION_FIRST_RUN_S, self.oversight.retention_interval_s)
        while True:
            await asyncio.sleep(delay)
            delay = self.oversight.retention_interval_s
            assert self.pool is not None
            try:
                await run_retention(
                    self.pool,
                    now=self.clock(),
                    retention_days=self.oversight.retention_days,
                    cell_m=self.oversight.cell_m,
                )
            except (asyncpg.PostgresError, OSError):
                log.exception("retention run failed; retrying at the next interval")

    async def watch(self) -> None:
        """Returns (or raises) when the consumer stops by itself: the supervisor's hook."""
        if self._consumer_task is not None:
            await asyncio.shield(self._consumer_task)
        else:
            await asyncio.Event().wait()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """API first (no new admin calls), then consumer (commits), then workers. Bounded."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._server_task), timeout_s / 3)
            except TimeoutError:
                self._server_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server_task
            except Exception:
                log.exception("dispatch API failed")
            self._server = self._server_task = None
        for task in (self._sweep_task,):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._sweep_task = None
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        if self._consumer_task is not None:
            self._consumer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._consumer_task
            self._consumer_task = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        await self._stop_places()
        if self.workers is not None:
            await self.workers.stop(timeout_s / 2)
            self.workers = None
        if self.pool is not None:
            await asyncio.wait_for(self.pool.close(), timeout_s / 3)
            self.pool = None

    async def _stop_places(self) -> None:
        if self._places_task is not None:
            self._places_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._places_task
            self._places_task = None

    async def crash(self) -> None:
        """Tests only: die like a killed process: no offset commit, no claim release."""
        tasks = [
            t
            for t in (
                self._consumer_task,
                self._server_task,
                self._places_task,
                self._retention_task,
                self._sweep_task,
            )
            if t is not None
        ]
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.workers is not None:
            await self.workers.crash()
        if self.consumer is not None:
            # Leave the group without committing (a killed process just vanishes; leaving
            # spares the test a session timeout).
            await self.consumer.consumer.stop()
            await self.consumer.producer.stop()
        if self.pool is not None:
            self.pool.terminate()
        self.pool = self.consumer = self.workers = None
        self._consumer_task = self._server_task = self._server = None
        self._places_task = self._retention_task = self._sweep_task = None


def run(settings: DispatchSettings) -> None:
    """Blocks until SIGTERM/SIGINT; embedded broker/database when their URLs are unset."""
    configure_logging(settings.log_level)
    with infrastructure(settings) as infra:

        async def _main() -> None:
            if infra.embedded_postgres:
                await migrate_url(infra.database_url)
            service = DispatchService(
                settings,
                bootstrap_servers=infra.bootstrap_servers,
                database_url=infra.database_url,
            )
            await serve_until_signalled(service)

        asyncio.run(_main())
