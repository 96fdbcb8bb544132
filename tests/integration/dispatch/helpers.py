"""Helpers of the dispatch integration tests: incidents, geofences, receivers, clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from services.dispatch.main import DispatchService
from shared.schemas import IncidentLocation, IncidentRecord

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


#: Downtown Pittsburgh-ish squares (lon, lat), for geofences.
def square(lon: float, lat: float, half: float = 0.01) -> dict[str, Any]:
    return {
        "type": "Polygon",
        "coordinates": [
            [
                [lon - half, lat - half],
                [lon + half, lat - half],
                [lon + half, lat + half],
                [lon - half, lat + half],
                [lon - half, lat - half],
            ]
        ],
    }


def incident(
    lat: float = 40.44,
    lon: float = -79.99,
    *,
    version: int = 1,
    event: str = "created",
    incident_id: str | None = None,
    probability: float = 0.9,
    classification: str = "gunfire",
) -> IncidentRecord:
    now = datetime.now(UTC)
    return IncidentRecord(
        incident_id=incident_id or f"inc-{uuid.uuid4().hex[:12]}",
        version=version,
        event=event,  # type: ignore[arg-type]
        zone="z1",
        classification=classification,  # type: ignore[arg-type]
        gunfire_probability=probability,
        rounds=3,
        shot_time=now - timedelta(seconds=2),
        last_shot_time=now - timedelta(seconds=1),
        location=IncidentLocation(lat=lat, lon=lon, radius95_m=25.0),
        sensor_count=4,
        sensors_used=["s1", "s2", "s3", "s4"],
        first_detection_received_at=now - timedelta(seconds=1.5),
        published_at=now,
    )


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: datetime
    answered_at: datetime | None = None  # when the answer was about to be written


@dataclass
class Receiver:
    """A loopback HTTP receiver: answers ``script`` statuses in order, then ``default``
    (after ``delay_s``)."""

    script: list[int] = field(default_factory=list)
    default: int = 200
    hang: bool = False
    delay_s: float = 0.0
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    in_flight: int = 0
    max_in_flight: int = 0

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        received = Received(dict(request.headers), body, datetime.now(UTC))
        self.received.append(received)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang:
                await asyncio.sleep(3600)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        received.answered_at = datetime.now(UTC)
        status = self.script.pop(0) if self.script else self.default
        headers = (
            {"retry-after": self.retry_after} if self.retry_after and status in (429, 503) else {}
        )
        return Response(status_code=status, headers=headers)

    async def wait_for(self, n: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(self.received) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"receiver got {len(self.received)} requests, wanted {n}")
            await asyncio.sleep(0.02)
        return self.received


def admin(service: DispatchService, token: str | None = ADMIN_TOKEN) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
