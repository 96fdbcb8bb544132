"""``shotline run --demo``: a simulated city feeding the running pipeline, end to end.

Registers a simulated sensor array (``services.locator.simulate``) in the registry, subscribes
a local webhook receiver to the whole array, then every few seconds simulates a situation
(single shot, burst, fireworks, two shooters): each sensor that hears it gets its audio
rendered and played in real time through the sensor program (``services.sensor``), which
detects the onsets and posts them to ingest with that sensor's own token — the whole chain
from sound to CAD. The receiver verifies
each alert's Standard Webhooks signature and prints it, with the shot-to-alert latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from rich.console import Console
from standardwebhooks import Webhook

from services.ingest.registry import add_sensor, list_sensors
from services.locator.simulate import CityArray, build_array, scenario, to_detection_in
from services.pipeline import Pipeline
from shared.schemas import Position

DEMO_NAME = "shotline demo CAD"
SITUATIONS = ("shot", "burst", "fireworks", "two_shooters", "echoes", "noise")


class DemoReceiver:
    """A CAD stand-in: verifies signatures, prints alerts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.secret: str | None = None
        self.received: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/alerts")
        async def alerts(request: Request) -> Response:
            body = await request.body()
            if self.secret is None:
                return Response(status_code=503)
            try:
                Webhook(self.secret).verify(body, dict(request.headers))
            except Exception as exc:  # a forged or corrupted alert: refuse it loudly
                self.console.print(f"[red]rejected alert with a bad signature: {exc}[/]")
                return Response(status_code=400)
            # Native JSON alerts are Standard Webhooks envelopes: {"type", "timestamp", "data"}
            alert = orjson.loads(body)["data"]
            self.received.append(alert)
            self._show(alert, request.headers.get("webhook-id", ""))
            return Response(status_code=204)

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False)
        )
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task[None] | None = None

    def _show(self, alert: dict[str, Any], webhook_id: str) -> None:
        """One line per alert: incident id, event and version, class, rounds, location with
        its 95 % radius, and the latency a dispatcher sees (a first alert from the shot, an
        update from the round that caused it, as the SLO counts them); beneath it the short
        address line when the city's layers are loaded."""
        line = alert_line(alert, datetime.now(UTC))
        if alert.get("audio"):  # links to the clips of the sensors that located it
            line += f"  {len(alert['audio'])} clips"
        self.console.print(line, soft_wrap=True, highlight=False)
        place = alert.get("place")
        if isinstance(place, dict) and place.get("text"):  # the city's layers are loaded
            self.console.print(f"      {place['text']}", highlight=False, markup=False)

    @property
    def url(self) -> str:
        for server in self.server.servers:
            for sock in server.sockets:
                return f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"
        raise RuntimeError("receiver not started")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        while not self.server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def alert_line(alert: dict[str, Any], received_at: datetime) -> str:
    """The screen line of one received JSON alert (rich markup)."""
    loc = alert.get("location", {})
    rounds = alert.get("rounds", "?")
    event = alert.get("event", "?")
    since, what = (
        ("last_shot_time", "its round") if event != "created" else ("shot_time", "the shot")
    )
    latency = ""
    if alert.get(since):
        at = datetime.fromisoformat(str(alert[since]).replace("Z", "+00:00"))
        latency = f"  {(received_at - at).total_seconds():.1f} s after {what}"
    return (
        f"[bold green]ALERT[/] {alert.get('incident_id', '?')} {event} v{alert.get('version', '?')}"
        f"  [bold]{alert.get('classification', '?')}[/] p={alert.get('gunfire_probability', 0):.2f}"
        f"  {rounds} round{'' if rounds == 1 else 's'}"
        f"  at {loc.get('lat', 0):.5f},{loc.get('lon', 0):.5f} ±{loc.get('radius95_m', 0):.0f} m"
        f"{latency}"
    )


async def register_array(database_url: str, array: CityArray) -> dict[str, str]:
    """Register the simulated sensors (new ones only); returns sensor_id -> token.

    Sensors already registered by an earlier demo run get a rotated token.
    """
    from services.ingest.registry import rotate_token

    conn = await asyncpg.connect(database_url)
    try:
        existing = {s.sensor_id for s in await list_sensors(conn)}
        tokens: dict[str, str] = {}
        for s in array.sensors:
            if s.sensor_id in existing:
                tokens[s.sensor_id] = await rotate_token(conn, s.sensor_id)
            else:
                _, tokens[s.sensor_id] = await add_sensor(
                    conn, s.sensor_id, s.zone, Position(lat=s.lat, lon=s.lon, alt_m=s.alt_m)
                )
        return tokens
    finally:
        await conn.close()


def array_geofence(array: CityArray, margin_deg: float = 0.01) -> dict[str, Any]:
    lats = [s.lat for s in array.sensors]
    lons = [s.lon for s in array.sensors]
    south, north = min(lats) - margin_deg, max(lats) + margin_deg
    west, east = min(lons) - margin_deg, max(lons) + margin_deg
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


async def subscribe(
    pipeline: Pipeline, receiver: DemoReceiver, array: CityArray, name: str = DEMO_NAME
) -> str:
    """Subscribe the receiver under ``name``, first disabling active subscriptions of that name
    (earlier demo runs' receivers, long gone)."""
    token = pipeline.settings.dispatch.admin_token.get_secret_value()
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10) as http:
        listed = await http.get(
            f"{pipeline.dispatch_url}/v1/subscriptions", params={"status": "active"}, headers=auth
        )
        listed.raise_for_status()
        for old in listed.json():
            if old["name"] == name:
                await http.post(
                    f"{pipeline.dispatch_url}/v1/subscriptions/{old['subscription_id']}/disable",
                    headers=auth,
                )
        answer = await http.post(
            f"{pipeline.dispatch_url}/v1/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "name": name,
                "channel": "webhook",
                "geofence": array_geofence(array),
                "classes": ["gunfire", "probable_gunfire"],
                "min_probability": 0.0,
                "format": "json",
                "url": receiver.url,
            },
        )
        answer.raise_for_status()
        receiver.secret = answer.json()["secret"]
        return str(answer.json()["subscription_id"])


async def fire(
    pipeline: Pipeline,
    array: CityArray,
    tokens: dict[str, str],
    kind: str,
    seed: int,
    run_id: str,
) -> tuple[int, int]:
    """Simulate one situation and post its detections as the sensors would: each sensor posts
    a pulse as soon as it has heard it (grouped per 50 ms tick), so the alert's latency is
    the real shot-to-alert latency. Returns (detections posted, detections accepted)."""
    start = datetime.now(UTC)
    world = scenario(kind, array, start=start, rng=np.random.default_rng(seed))
    pending = sorted(world.detections, key=lambda r: r.arrival_time)
    accepted = 0
    async with httpx.AsyncClient(timeout=10) as http:

        async def post(sensor_id: str, items: list[dict[str, Any]]) -> int:
            answer = await http.post(
                f"{pipeline.ingest_url}/v1/detections",
                headers={"Authorization": f"Bearer {tokens[sensor_id]}"},
                json={"detections": items},
            )
            return int(answer.json().get("accepted", 0)) if answer.status_code == 202 else 0

        while pending:
            wait = (pending[0].arrival_time - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(wait, 0.0) + 0.05)
            now = datetime.now(UTC)
            due = [r for r in pending if r.arrival_time <= now]
            pending = pending[len(due) :]
            by_sensor: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for record in due:
                item = to_detection_in(record)
                # unique per run: the same ids again would (rightly) be dropped as duplicates
                item["detection_id"] = f"{item['detection_id']}-{run_id}-{seed}"
                by_sensor[record.sensor_id].append(item)
            counts = await asyncio.gather(*(post(k, v) for k, v in by_sensor.items()))
            accepted += sum(counts)
    return len(world.detections), accepted


async def fire_through_sensors(
    pipeline: Pipeline, array: CityArray, tokens: dict[str, str], kind: str, seed: int
) -> tuple[int, int, int]:
    """Simulate one situation and let the sensor program hear it: each sensor's audio is
    rendered and played in real time into ``shotline sensor``'s service, which detects,
    measures and posts (services/sensor/simulated.py). Returns (onsets, accepted, clips)."""
    from services.sensor.simulated import hear, stream_start_for

    start = datetime.now(UTC) + timedelta(seconds=1.5)
    world = scenario(kind, array, start=start, rng=np.random.default_rng(seed))
    heard = await hear(
        list(world.detections), stream_start=stream_start_for(start), tokens=tokens,
        ingest_url=pipeline.ingest_url, seed=seed,
    )
    return heard.onsets, heard.accepted, heard.clips


async def run_demo(
    pipeline: Pipeline,
    console: Console,
    every_s: float = 8.0,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Runs until cancelled; ``on_ready()`` is called once the array and its CAD are set up,
    before the first situation."""
    array = build_array(density_per_sq_mi=12, area_sq_mi=2.0, seed=7)
    tokens = await register_array(pipeline.database_url, array)
    receiver = DemoReceiver(console)
    await receiver.start()
    try:
        await subscribe(pipeline, receiver, array)
        console.print(
            f"demo: {len(array.sensors)} simulated sensors in zone {array.sensors[0].zone}; "
            f"alerts go to {receiver.url}"
        )
        if on_ready is not None:
            on_ready()
        for n in itertools.count(1):
            kind = SITUATIONS[(n - 1) % len(SITUATIONS)]
            onsets, accepted, clip_count = await fire_through_sensors(
                pipeline, array, tokens, kind, seed=n
            )
            console.print(
                f"[cyan]simulated[/] {kind}: the sensors heard {onsets} onsets, ingest accepted "
                f"{accepted}, {clip_count} clips"
            )
            await asyncio.sleep(every_s)
    finally:
        await receiver.stop()
