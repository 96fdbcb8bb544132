"""Dispatch throughput and latency with one hanging receiver out of ten.

Starts an embedded broker and PostgreSQL, ten loopback webhook receivers in a child process
(receiver 0 never answers), one dispatch instance with ten webhook subscriptions whose
geofences tile a 5 x 2 grid with overlap, and feeds incidents at ``--rate`` per second for
``--duration`` seconds through Kafka. Then it waits for the healthy receivers' backlog to
drain and reads the delivery rows:

* latency = ``delivered_at`` (receiver's 2xx received) − ``created_at`` (the transaction that
  consumed the incident and wrote the outbox row), healthy receivers only;
* throughput = deliveries acknowledged per second over the feeding window.

Target: p99 under 100 ms while one receiver in ten hangs.

    python bench/dispatch.py [--rate 100] [--duration 15]

Last line: JSON with deliveries_per_s, p50_ms, p99_ms (and context).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.dispatch.main import DispatchService
from services.dispatch.settings import DispatchSettings
from shared.db import migrate_url
from shared.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from shared.kafka import build_producer, encode, ensure_topics
from shared.schemas import IncidentLocation, IncidentRecord

LON0, LAT0 = -80.05, 40.40  # south-west corner of the grid
CELL = 0.02  # degrees; cells overlap by OVERLAP on each side
OVERLAP = 0.004
HANGING = 0


# --- receivers (child process) --------------------------------------------------------------


async def _serve_receiver(port: int, hang: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if hang:
                    await asyncio.sleep(3600)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def receivers_main(ports: list[int]) -> None:
    async def _all() -> None:
        await asyncio.gather(*(_serve_receiver(p, i == HANGING) for i, p in enumerate(ports)))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_all())


# --- bench ----------------------------------------------------------------------------------


def _cell(i: int) -> dict:
    col, row = i % 5, i // 5
    x0, y0 = LON0 + col * CELL - OVERLAP, LAT0 + row * CELL - OVERLAP
    x1, y1 = LON0 + (col + 1) * CELL + OVERLAP, LAT0 + (row + 1) * CELL + OVERLAP
    return {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
    }


def _incident(rng: random.Random) -> IncidentRecord:
    now = datetime.now(UTC)
    return IncidentRecord(
        incident_id=f"bench-{uuid.uuid4().hex[:16]}",
        version=1,
        event="created",
        zone="bench",
        classification="gunfire",
        gunfire_probability=0.95,
        rounds=2,
        shot_time=now - timedelta(seconds=1.5),
        last_shot_time=now - timedelta(seconds=1.2),
        location=IncidentLocation(
            lat=LAT0 + rng.uniform(0, 2 * CELL),
            lon=LON0 + rng.uniform(0, 5 * CELL),
            radius95_m=20.0,
        ),
        sensor_count=4,
        first_detection_received_at=now - timedelta(seconds=1.0),
        published_at=now,
    )


async def bench(
    kafka: EmbeddedKafka,
    postgres: EmbeddedPostgres,
    ports: list[int],
    rate: float,
    duration_s: float,
    drain_s: float,
) -> dict:
    service: DispatchService | None = None
    producer = None
    try:
        dsn = postgres.dsn
        await migrate_url(dsn)
        topic = f"bench-incidents-{uuid.uuid4().hex[:6]}"
        await ensure_topics(kafka.bootstrap_servers, {topic: 6})
        settings = DispatchSettings(
            admin_token="bench-admin-token-0123456789",
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            database_url=dsn,
            incidents_topic=topic,
            topic_partitions=6,
            port=0,
            read_timeout_s=1.0,
            connect_timeout_s=0.5,
            write_timeout_s=0.5,
            pool_timeout_s=0.5,
            lease_s=10.0,
            retry_schedule_s=(0.5, 1.0, 2.0),
            breaker_failures=5,
            breaker_reset_s=2.0,
            allowed_target_networks=["127.0.0.0/8"],  # the bench's receivers
        )
        service = DispatchService(
            settings, bootstrap_servers=kafka.bootstrap_servers, database_url=dsn
        )
        await service.start()
        import httpx

        async with httpx.AsyncClient(
            base_url=service.url,
            headers={"authorization": "Bearer bench-admin-token-0123456789"},
        ) as admin:
            for i, port in enumerate(ports):
                response = await admin.post(
                    "/v1/subscriptions",
                    json={
                        "name": f"agency-{i}",
                        "channel": "webhook",
                        "url": f"http://127.0.0.1:{port}/hook",
                        "geofence": _cell(i),
                    },
                )
                response.raise_for_status()
        hung_endpoint = f"http://127.0.0.1:{ports[HANGING]}"
        await asyncio.sleep(3.0)  # consumer group join

        producer = build_producer(kafka.bootstrap_servers, client_id="bench-locator")
        await producer.start()
        rng = random.Random(7)
        sent = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration_s:
            due = int(elapsed * rate) + 1
            while sent < due:
                record = _incident(rng)
                await producer.send(topic, encode(record), key=record.incident_id.encode())
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
        feed_s = time.monotonic() - start

        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                stored = await conn.fetchval("SELECT count(*) FROM dispatch_incidents")
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM dispatch_deliveries "
                    "WHERE status = 'pending' AND endpoint <> $1",
                    hung_endpoint,
                )
                if stored == sent and waiting == 0:
                    break
                await asyncio.sleep(0.2)
            row = await conn.fetchrow(
                """SELECT count(*) AS n,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY
                       extract(epoch FROM delivered_at - created_at)) AS p50,
                     percentile_cont(0.99) WITHIN GROUP (ORDER BY
                       extract(epoch FROM delivered_at - created_at)) AS p99,
                     max(extract(epoch FROM delivered_at - created_at)) AS worst,
                     extract(epoch FROM max(delivered_at) - min(created_at)) AS span,
                     percentile_cont(0.99) WITHIN GROUP (ORDER BY
                       extract(epoch FROM first_attempt_at - created_at)) AS p99_claim,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY
                       extract(epoch FROM first_attempt_at - created_at)) AS p50_claim
                   FROM dispatch_deliveries
                   WHERE status = 'delivered' AND endpoint <> $1""",
                hung_endpoint,
            )
            stored = await conn.fetchval("SELECT count(*) FROM dispatch_incidents")
            by_status = dict(
                await conn.fetch(
                    "SELECT status, count(*) FROM dispatch_deliveries WHERE endpoint = $1 "
                    "GROUP BY 1",
                    hung_endpoint,
                )
            )
        finally:
            await conn.close()
        return {
            "deliveries_per_s": round(row["n"] / max(float(row["span"] or 1), feed_s), 1),
            "p50_ms": round(float(row["p50"] or 0) * 1000, 1),
            "p99_ms": round(float(row["p99"] or 0) * 1000, 1),
            "p50_claim_ms": round(float(row["p50_claim"] or 0) * 1000, 1),
            "p99_claim_ms": round(float(row["p99_claim"] or 0) * 1000, 1),
            "max_ms": round(float(row["worst"] or 0) * 1000, 1),
            "delivered": row["n"],
            "incidents_sent": sent,
            "incidents_stored": stored,
            "rate_per_s": rate,
            "duration_s": duration_s,
            "hanging_receiver_rows": {k: int(v) for k, v in by_status.items()},
            "target_p99_ms": 100,
        }
    finally:
        if producer is not None:
            await producer.stop()
        if service is not None:
            await service.stop(5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="incidents per second")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of feeding")
    parser.add_argument("--drain", type=float, default=20.0, help="seconds to wait after")
    parser.add_argument("--receivers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers:
        receivers_main([int(p) for p in args.receivers.split(",")])
        return
    logging.basicConfig(level=logging.WARNING)
    kafka = EmbeddedKafka().start()
    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="shotline-bench-")) / "pg").start()
    ports = [free_port() for _ in range(10)]
    child = subprocess.Popen(
        [sys.executable, __file__, "--receivers", ",".join(map(str, ports))],
        stdin=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(bench(kafka, postgres, ports, args.rate, args.duration, args.drain))
    finally:
        child.terminate()
        child.wait(5)
        postgres.stop()
        kafka.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
