"""Ingest wiring: the FastAPI factory, its lifespan, and an embeddable HTTP service.

Nothing is built at import: ``create_app(settings, bootstrap_servers=…, database_url=…)``
connects in its lifespan; :class:`IngestService` serves it with uvicorn and exposes
``start()``/``stop()`` so tests and ``shotline run`` embed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline

from services.ingest import audio
from services.ingest import metrics as ingest_metrics
from services.ingest.auth import VerifiedTokens
from services.ingest.docs import COMPONENTS, SECURITY_SCHEMES
from services.ingest.registry import touch_last_seen
from services.ingest.routes import router
from services.ingest.settings import IngestSettings
from services.ingest.state import IngestState
from services.ingest.validation import RecentDetections, TokenBucket
from shared.clock import Clock, utc_now
from shared.db import create_pool
from shared.kafka import build_producer, ensure_topics, wait_for_broker
from shared.metrics import metrics_response

log = logging.getLogger("shotline.ingest")


async def _flush_last_seen(state: IngestState) -> None:
    """Every few seconds, write the sensors' last-seen times in one statement."""
    while True:
        await asyncio.sleep(state.settings.last_seen_flush_s)
        await _write_last_seen(state)


async def _write_last_seen(state: IngestState) -> None:
    seen, state.last_seen = state.last_seen, {}
    if not seen:
        return
    try:
        await touch_last_seen(state.pool, seen)
    except Exception:
        # Keep them for the next round: last-seen is advisory, ingest must go on.
        for sensor_id, when in seen.items():
            state.last_seen.setdefault(sensor_id, when)
        log.exception("could not write last-seen times")


def create_app(
    settings: IngestSettings,
    *,
    bootstrap_servers: str,
    database_url: str,
    clock: Clock = utc_now,
) -> FastAPI:
    """The ingest ASGI app. Its lifespan connects to Kafka and Postgres (raises if they fail)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await wait_for_broker(bootstrap_servers, timeout_s=settings.kafka_connect_timeout_s)
        connection = settings.kafka_connection()
        await ensure_topics(
            bootstrap_servers,
            {settings.detections_topic: settings.topic_partitions},
            connection=connection,
        )
        pool = await create_pool(database_url, max_size=settings.db_pool_size)
        producer = build_producer(
            bootstrap_servers, client_id="shotline-ingest", connection=connection
        )
        await producer.start()
        state = IngestState(
            settings=settings,
            bootstrap_servers=bootstrap_servers,
            pool=pool,
            producer=producer,
            clock=clock,
            recent=RecentDetections(
                horizon=timedelta(seconds=settings.max_age_s + settings.clock_tolerance_s + 60),
                capacity=settings.dedup_capacity,
            ),
            rate_limit=TokenBucket(settings.rate_per_sensor_per_s, settings.rate_burst),
            tokens=VerifiedTokens(
                max_age_s=settings.token_cache_s, capacity=settings.token_cache_size
            ),
        )
        app.state.ingest = state
        flusher = asyncio.create_task(_flush_last_seen(state), name="last-seen")
        purger = asyncio.create_task(audio.purge_loop(state), name="clip-retention")
        try:
            yield
        finally:
            for task in (flusher, purger):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await _write_last_seen(state)
            await producer.stop()
            await pool.close()

    app = FastAPIOffline(  # Swagger UI and ReDoc from files in the package: no CDN
        title="Shotline ingest",
        version="1.0",
        summary="Sensors post acoustic detections; each accepted one is durably on Kafka.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(audio.router)
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = original_openapi()
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(COMPONENTS)
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = metrics_response(ingest_metrics.REGISTRY)
        return Response(body, media_type=content_type)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: object, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    return app


class IngestService:
    """Ingest over HTTP with uvicorn, embeddable: ``await start()`` … ``await stop()``."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        bootstrap_servers: str,
        database_url: str,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.app = create_app(
            settings, bootstrap_servers=bootstrap_servers, database_url=database_url, clock=clock
        )
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # main owns signals
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self, timeout_s: float = 30.0) -> None:
        """Serve in a background task; returns once listening. Raises if start-up failed
        (BrokerUnavailable, before listening, if Kafka does not answer in time)."""
        await wait_for_broker(
            self.bootstrap_servers, timeout_s=self.settings.kafka_connect_timeout_s
        )
        self._task = asyncio.create_task(self._server.serve(), name="ingest-http")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise the start-up error
                raise RuntimeError("ingest stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise TimeoutError("ingest did not start in time")
            await asyncio.sleep(0.02)

    async def wait(self) -> None:
        """Returns (or raises) when the server stops by itself: the supervisor's hook."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, finish in-flight requests, close Kafka and Postgres. Bounded."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None
