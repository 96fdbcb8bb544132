"""Dispatch integration fixtures: settings on the session's broker and a fresh database,
running services, admin clients, incident factories and loopback webhook receivers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from services.dispatch.main import DispatchService
from services.dispatch.settings import DispatchSettings
from shared.kafka import build_producer, encode
from shared.schemas import IncidentRecord
from tests.integration.dispatch.helpers import ADMIN_TOKEN, Receiver


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    """``await receivers(**Receiver fields)`` starts one on 127.0.0.1 (stopped after)."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
            )
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()  # re-raise why it could not listen
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        servers.append((server, task))
        return receiver

    yield make
    for server, _ in servers:
        server.should_exit = True
        server.force_exit = True
    for _, task in servers:
        try:
            await asyncio.wait_for(task, 3)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


@pytest.fixture
def make_settings(
    kafka_bootstrap: str, database_url: str, topics: Any
) -> Callable[..., DispatchSettings]:
    group = f"dispatch-{uuid.uuid4().hex[:8]}"

    def make(**overrides: Any) -> DispatchSettings:
        values: dict[str, Any] = dict(
            admin_token=ADMIN_TOKEN,
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=database_url,
            incidents_topic=topics.incidents,
            topic_partitions=topics.partitions,
            kafka_session_timeout_ms=2000,
            group_id=group,
            port=0,
            poll_interval_s=0.1,
            connect_timeout_s=0.5,
            read_timeout_s=0.5,
            write_timeout_s=0.5,
            pool_timeout_s=0.5,
            lease_s=3.0,
            retry_jitter_ratio=0.0,
            breaker_failures=50,
            breaker_reset_s=0.5,
            allowed_target_networks=["127.0.0.0/8"],  # the receivers listen on loopback
        )
        # tiny retry schedules: ``max_attempts=n`` means n attempts 50 ms apart
        attempts = overrides.pop("max_attempts", 3)
        values["retry_schedule_s"] = (0.05,) * (attempts - 1)
        values.update(overrides)
        return DispatchSettings(**values)

    return make


@pytest.fixture
async def services(
    kafka_bootstrap: str, database_url: str
) -> AsyncIterator[Callable[..., Awaitable[DispatchService]]]:
    """``await services(settings)`` starts a DispatchService (stopped after the test)."""
    started: list[DispatchService] = []

    async def start(settings: DispatchSettings) -> DispatchService:
        service = DispatchService(
            settings, bootstrap_servers=kafka_bootstrap, database_url=database_url
        )
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop(5.0)


@pytest.fixture
async def publish(
    kafka_bootstrap: str, topics: Any
) -> AsyncIterator[Callable[[IncidentRecord], Awaitable[None]]]:
    """``await publish(record)`` writes it to the incidents topic keyed by incident_id."""
    producer = build_producer(kafka_bootstrap, client_id="test-locator")
    await producer.start()

    async def send(record: IncidentRecord) -> None:
        await producer.send_and_wait(
            topics.incidents, encode(record), key=record.incident_id.encode()
        )

    yield send
    await producer.stop()
