"""Ingest throughput and acknowledgement latency, end to end (HTTP in, Kafka acked).

Starts an embedded broker and PostgreSQL, registers sensors, runs ``shotline ingest`` as its
own process (as in production), and drives it over keep-alive HTTP/1.1 connections from this
process. Measures, in one run:

* ``single_rps``   — requests/s with one detection per request (closed loop, many connections)
* ``batch100_dps`` — detections/s with 100 detections per request
* ``raw_produce_dps`` — the same records produced straight to the same broker with aiokafka
  (acks=all), the ceiling ingest is compared with (``ratio_to_raw`` = batch100 / raw)
* ``p50_ms``/``p99_ms`` — response latency of single-detection requests paced at 500 req/s

Targets on a 2-core machine: single_rps >= 1,500; batch100_dps >= 15,000; ratio >= 0.5;
p99 < 50 ms at 500 req/s. Usage: ``python bench/ingest.py [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.registry import add_sensor
from shared.db import migrate
from shared.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from shared.kafka import build_producer, encode, ensure_topics
from shared.schemas import DetectionRecord, Position

TOPIC = "bench.detections"
SENSORS = 200


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less than the server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, token: str, body: bytes) -> int:
        assert self.reader and self.writer
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status


#: Numbers the closed-loop requests of the whole run, so each posts detection ids of its own.
_REQUESTS = itertools.count()


def _body(sensor_id: str, start: int, count: int) -> bytes:
    """``count`` new detections; ids carry the batch size, so no two phases reuse an id (a
    reused id with other content is a ``conflict``, not a 202)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps(
        {
            "detections": [
                {
                    "detection_id": f"{sensor_id}-{count}-{start + i}",
                    "sensor_id": sensor_id,
                    "arrival_time": now,
                    "peak_db": 130.0,
                    "snr_db": 25.0,
                    "rise_time_ms": 0.4,
                    "duration_ms": 2.0,
                    "spectral_centroid_hz": 1800.0,
                }
                for i in range(count)
            ]
        }
    )


async def closed_loop(
    port: int, tokens: list[tuple[str, str]], per_request: int, seconds: float, connections: int
) -> tuple[float, int]:
    """Many connections, each posting back to back. Returns (detections/s, non-202 count)."""
    counter = _REQUESTS  # shared by every phase: the warm-up's ids are not posted again
    done = 0
    failures = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done, failures
        http = RawHttp("127.0.0.1", port)
        await http.connect()
        while time.perf_counter() < stop_at:
            n = next(counter)
            sensor_id, token = tokens[n % len(tokens)]
            status = await http.post(
                "/v1/detections", token, _body(sensor_id, n * per_request, per_request)
            )
            if status == 202:
                done += per_request
            else:
                failures += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(connections)))
    return done / (time.perf_counter() - began), failures


async def paced(
    port: int, tokens: list[tuple[str, str]], rate: float, seconds: float
) -> list[float]:
    """Open loop at ``rate`` requests/s; returns each request's latency in seconds."""
    pool: asyncio.Queue[RawHttp] = asyncio.Queue()
    for _ in range(64):
        http = RawHttp("127.0.0.1", port)
        await http.connect()
        pool.put_nowait(http)
    latencies: list[float] = []

    async def one(n: int) -> None:
        http = await pool.get()
        sensor_id, token = tokens[n % len(tokens)]
        body = _body(sensor_id, 10**9 + n, 1)
        t = time.perf_counter()
        await http.post("/v1/detections", token, body)
        latencies.append(time.perf_counter() - t)
        pool.put_nowait(http)

    tasks = []
    began = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        target = began + n / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies


async def raw_produce(bootstrap: str, count: int) -> float:
    producer = build_producer(bootstrap, client_id="bench-raw")
    await producer.start()
    now = datetime.now(UTC)
    records = [
        DetectionRecord(
            detection_id=f"raw-{i}",
            sensor_id=f"s-{i % SENSORS:04d}",
            zone=f"zone-{i % 6}",
            arrival_time=now,
            position=Position(lat=40.44, lon=-79.99, alt_m=20),
            received_at=now,
        )
        for i in range(count)
    ]
    try:
        began = time.perf_counter()
        # Same shape as ingest's work: encode each record, send keyed by zone, await the acks.
        futures = [
            await producer.send("bench.raw", encode(r), key=r.zone.encode()) for r in records
        ]
        await asyncio.gather(*futures)
        return count / (time.perf_counter() - began)
    finally:
        await producer.stop()


async def setup_sensors(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        tokens = []
        for i in range(SENSORS):
            sensor_id = f"s-{i:04d}"
            _, token = await add_sensor(
                conn, sensor_id, f"zone-{i % 6}", Position(lat=40.44, lon=-79.99, alt_m=20)
            )
            tokens.append((sensor_id, token))
        return tokens
    finally:
        await conn.close()


def wait_http(port: int, timeout_s: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("ingest did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    args = parser.parse_args()

    kafka = EmbeddedKafka().start()
    workdir = Path(tempfile.mkdtemp(prefix="shotline-bench-"))
    postgres = EmbeddedPostgres(workdir / "pg").start()
    ingest: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(ensure_topics(kafka.bootstrap_servers, {TOPIC: 6, "bench.raw": 6}))
        tokens = asyncio.run(setup_sensors(postgres.dsn))
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DATABASE_URL": postgres.dsn,
            "SHOTLINE_DETECTIONS_TOPIC": TOPIC,
            "SHOTLINE_INGEST_PORT": str(port),
            "SHOTLINE_INGEST_RATE_PER_SENSOR_PER_S": "100000",
            "SHOTLINE_INGEST_RATE_BURST": "100000",
            "SHOTLINE_LOG_LEVEL": "WARNING",
        }
        ingest = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingest"],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        wait_http(port)

        async def run_all() -> dict[str, float]:
            await closed_loop(port, tokens, 1, 1.0, 16)  # warm-up
            single, f1 = await closed_loop(port, tokens, 1, args.seconds, 32)
            batch, f2 = await closed_loop(port, tokens, 100, args.seconds, 16)
            latencies = await paced(port, tokens, 500, args.seconds)
            raw = await raw_produce(kafka.bootstrap_servers, int(max(batch, 1) * 2))
            q = statistics.quantiles(latencies, n=100)
            return {
                "single_rps": round(single, 1),
                "batch100_dps": round(batch, 1),
                "raw_produce_dps": round(raw, 1),
                "ratio_to_raw": round(batch / raw, 3),
                "p50_ms": round(statistics.median(latencies) * 1000, 2),
                "p99_ms": round(q[98] * 1000, 2),
                "failed_requests": f1 + f2,
            }

        figures = asyncio.run(run_all())
    finally:
        if ingest is not None:
            ingest.terminate()
            ingest.wait(15)
        postgres.stop()
        kafka.stop()
    print(
        f"single-detection requests/s: {figures['single_rps']:.0f} (target >= 1500)\n"
        f"detections/s in batches of 100: {figures['batch100_dps']:.0f} (target >= 15000)\n"
        f"raw aiokafka produce/s: {figures['raw_produce_dps']:.0f}; ingest/raw = "
        f"{figures['ratio_to_raw']:.2f} (target >= 0.5)\n"
        f"latency at 500 req/s: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms "
        "(target p99 < 50 ms)",
        file=sys.stderr,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
