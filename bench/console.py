"""Console latency: incident stored -> shown in connected console sessions.

Starts an embedded broker and PostgreSQL and one dispatch instance, connects ``--consoles``
console sessions (``--browsers`` of them real pages in Debian's chromium via Playwright, the
rest plain SSE clients of the same feed), then publishes ``--rate`` incidents per second for
``--duration`` seconds to the incidents topic. For every version it takes the time from the
row stored in PostgreSQL (``consumed_at``) to the page having drawn it (``Date.now()`` in the
page after the frame that drew it) or the SSE client having read it.

Last line: JSON with p50_ms / p99_ms (browsers and all sessions) and the context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from services.dispatch.main import DispatchService
from services.dispatch.settings import DispatchSettings
from shared.db import migrate_url
from shared.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.kafka import build_producer, encode, ensure_topics
from shared.schemas import IncidentLocation, IncidentRecord

TOKEN = "bench-console-token-0123456789"


def _incident(i: int) -> IncidentRecord:
    now = datetime.now(UTC)
    return IncidentRecord(
        incident_id=f"bench-{uuid.uuid4().hex[:12]}",
        version=1,
        event="created",
        zone="z1",
        classification="gunfire",
        gunfire_probability=0.9,
        rounds=1 + i % 4,
        shot_time=now - timedelta(seconds=2),
        last_shot_time=now - timedelta(seconds=1),
        location=IncidentLocation(
            lat=40.44 + (i % 17) * 0.001, lon=-79.99 + (i % 13) * 0.001, radius95_m=25.0
        ),
        sensor_count=4,
        sensors_used=["s1", "s2", "s3", "s4"],
        first_detection_received_at=now - timedelta(seconds=1.5),
        published_at=now,
    )


async def _sse_client(url: str, seen: dict[str, float], stop: asyncio.Event) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                seen.setdefault(event["incident"]["incident_id"], time.time())
            if stop.is_set():
                return


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def bench(args: argparse.Namespace, kafka: EmbeddedKafka, postgres: EmbeddedPostgres) -> dict:
    from playwright.async_api import async_playwright

    dsn = postgres.dsn
    await migrate_url(dsn)
    topic = f"bench-console-{uuid.uuid4().hex[:6]}"
    await ensure_topics(kafka.bootstrap_servers, {topic: 3})
    settings = DispatchSettings(
        admin_token=TOKEN,
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=dsn,
        incidents_topic=topic,
        topic_partitions=3,
        port=0,
        workers=False,  # no subscriptions: only storing and showing is measured
    )
    service = DispatchService(settings, bootstrap_servers=kafka.bootstrap_servers, database_url=dsn)
    await service.start()
    producer = build_producer(kafka.bootstrap_servers, client_id="bench-locator")
    await producer.start()
    stop = asyncio.Event()
    clients: list[asyncio.Task[None]] = []
    sse_seen: list[dict[str, float]] = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            pages = []
            for _ in range(args.browsers):
                # one context each: its own connection pool (a profile allows 6 per host)
                context = await browser.new_context(viewport={"width": 1024, "height": 700})
                page = await context.new_page()
                await page.goto(f"{service.url}/console")
                await page.fill("#token", TOKEN)
                await page.click("#login-button")
                await page.wait_for_selector("#feed-state.on", timeout=20000)
                pages.append(page)
            for _ in range(args.consoles - args.browsers):
                seen: dict[str, float] = {}
                sse_seen.append(seen)
                clients.append(
                    asyncio.create_task(_sse_client(f"{service.url}/v1/console/feed", seen, stop))
                )
            deadline = time.monotonic() + 30
            for _ in range(300):  # every session connected before the first incident
                if service.feed is None or service.feed.connected >= args.consoles:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {service.feed.connected} consoles connected")
                await asyncio.sleep(0.1)
            ids = []
            t0 = time.monotonic()
            n = int(args.rate * args.duration)
            for i in range(n):
                record = _incident(i)
                ids.append(record.incident_id)
                await producer.send_and_wait(topic, encode(record), key=record.incident_id.encode())
                await asyncio.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
            await asyncio.sleep(args.drain)
            shown = []
            for page in pages:
                shown.append(
                    {
                        i: v / 1000
                        for i, _, v in await page.evaluate("window.shotlineShown")
                        if v
                    }
                )
            await browser.close()
        conn = await asyncpg.connect(dsn)
        try:
            stored = {
                r["incident_id"]: r["consumed_at"].timestamp()
                for r in await conn.fetch(
                    "SELECT incident_id, consumed_at FROM dispatch_incident_versions "
                    "WHERE incident_id = ANY($1::text[])",
                    ids,
                )
            }
        finally:
            await conn.close()
    finally:
        stop.set()
        for task in clients:
            task.cancel()
        for task in clients:
            with contextlib.suppress(BaseException):
                await task
        await producer.stop()
        await service.stop(10)
    browser_ms = [
        (s[i] - stored[i]) * 1000 for s in shown for i in ids if i in s and i in stored
    ]
    sse_ms = [
        (s[i] - stored[i]) * 1000 for s in sse_seen for i in ids if i in s and i in stored
    ]
    everything = browser_ms + sse_ms
    expected = len(stored) * args.consoles
    return {
        "consoles": args.consoles,
        "browser_pages": args.browsers,
        "rate_per_s": args.rate,
        "incidents": n,
        "stored": len(stored),
        "shown_share": round(len(everything) / expected, 4) if expected else 0.0,
        "browser_p50_ms": round(_pct(browser_ms, 0.5), 1),
        "browser_p99_ms": round(_pct(browser_ms, 0.99), 1),
        "all_p50_ms": round(_pct(everything, 0.5), 1),
        "all_p99_ms": round(_pct(everything, 0.99), 1),
        "all_max_ms": round(max(everything), 1) if everything else None,
        "mean_ms": round(statistics.fmean(everything), 1) if everything else None,
        "target_p99_ms": 500,
        "target_met": bool(everything) and _pct(everything, 0.99) < 500,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--consoles", type=int, default=50, help="connected console sessions")
    parser.add_argument("--browsers", type=int, default=10, help="of them, real chromium pages")
    parser.add_argument("--rate", type=float, default=10.0, help="incidents per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait after")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.browsers = min(args.browsers, args.consoles)
    logging.basicConfig(level=logging.WARNING)
    kafka = EmbeddedKafka().start()
    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="shotline-bench-")) / "pg").start()
    try:
        result = asyncio.run(bench(args, kafka, postgres))
    finally:
        postgres.stop()
        kafka.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
