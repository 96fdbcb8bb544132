"""Dispatch latency, order and throughput, each with its own receivers.

Starts an embedded broker and PostgreSQL, loopback webhook receivers in a child process and
one dispatch instance, feeds incidents through Kafka and reads the delivery rows (latency =
``delivered_at``, the receiver's 2xx, − ``created_at``, the transaction that consumed the
incident version and wrote its outbox row). Three cases (``--case``, default all):

* ``hang``: ten subscriptions whose geofences tile a 5 x 2 grid with overlap, receiver 0
  never answers; incidents at ``--rate`` per second for ``--duration`` s. Target: p99 under
  100 ms for the healthy receivers.
* ``ordering``: ten subscriptions of the whole area, receiver 0 answers 503 for
  ``--fail-s`` (30) s from its first request, then 204; incidents with 5 versions each (a
  new incident every 1/``--order-rate`` s, its versions 1 s apart, every other one ending
  in a cancel). The receivers check what they get: a version older than one they got
  before, or anything after a cancel, is out of order. Targets: 0 out of order, p99 under
  100 ms for the nine healthy receivers.
* ``throughput``: ten healthy subscriptions of the whole area, a backlog of
  ``--backlog`` incidents published at once; deliveries acknowledged per second from the
  first row written to the last acknowledgement (``deliveries_per_s``: the consumer's
  stores bound it), and by the delivery workers alone on an outbox written beforehand
  (``workers_only_deliveries_per_s``, from the sending instance's start). Target: at
  least 500/s.

    python bench/dispatch.py [--case all] [--rate 100] [--duration 15] [--fail-s 30]

Last line: JSON with every case's figures (``hang``, ``ordering``, ``throughput``).
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
import httpx

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


# --- receivers (child process) --------------------------------------------------------------


class _Story:
    """What one receiver checks of the messages it gets: per incident, the versions in
    order and nothing after a cancel (every request counts, answered 2xx or not)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.cancelled: dict[str, str] = {}  # incident -> webhook-id of its cancel
        self.received = 0
        self.out_of_order = 0
        self.after_cancel = 0

    def see(self, webhook_id: str, body: bytes) -> None:
        """One request (a retry repeats its webhook-id: the same message, not a new one)."""
        self.received += 1
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError):
            return
        incident, version = data["incident_id"], data["version"]
        if self.cancelled.get(incident, webhook_id) != webhook_id:
            self.after_cancel += 1
        if version < self.last.get(incident, 0):
            self.out_of_order += 1
        self.last[incident] = max(version, self.last.get(incident, 0))
        if data["event"] == "cancelled":
            self.cancelled.setdefault(incident, webhook_id)

    def figures(self) -> dict[str, int]:
        return {
            "received": self.received,
            "out_of_order": self.out_of_order,
            "after_cancel": self.after_cancel,
        }


async def _serve_receiver(port: int, mode: str, fail_s: float) -> None:
    """``mode``: ok (204), hang (never answers), fail (503 for ``fail_s`` from the first
    request, then 204). ``GET /stats`` answers the :class:`_Story` figures."""
    story = _Story()
    failing_until: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, ""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    elif line.lower().startswith(b"webhook-id:"):
                        webhook_id = line.split(b":", 1)[1].strip().decode()
                body = await reader.readexactly(length)
                if head.startswith(b"GET /stats"):
                    stats = json.dumps(story.figures()).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(stats), stats)
                    )
                    await writer.drain()
                    continue
                story.see(webhook_id, body)
                if mode == "hang":
                    await asyncio.sleep(3600)
                if mode == "fail" and not failing_until:
                    failing_until.append(time.monotonic() + fail_s)
                if mode == "fail" and time.monotonic() < failing_until[0]:
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


def receivers_main(spec: str, fail_s: float) -> None:
    """``spec``: comma-separated ``port:mode``."""
    pairs = [item.split(":") for item in spec.split(",")]

    async def _all() -> None:
        await asyncio.gather(*(_serve_receiver(int(p), m, fail_s) for p, m in pairs))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_all())


# --- bench ---------------------------------------------------------------------------------

ADMIN_TOKEN = "bench-admin-token-0123456789"
#: One square around the whole grid (every incident reaches every such subscription).
WHOLE_AREA = {
    "type": "Polygon",
    "coordinates": [
        [
            [LON0 - 0.01, LAT0 - 0.01],
            [LON0 + 5 * CELL + 0.01, LAT0 - 0.01],
            [LON0 + 5 * CELL + 0.01, LAT0 + 2 * CELL + 0.01],
            [LON0 - 0.01, LAT0 + 2 * CELL + 0.01],
            [LON0 - 0.01, LAT0 - 0.01],
        ]
    ],
}


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


def _next_version(record: IncidentRecord, *, cancel: bool) -> IncidentRecord:
    return record.model_copy(
        update={
            "version": record.version + 1,
            "event": "cancelled" if cancel else "updated",
            "rounds": record.rounds + 1,
            "published_at": datetime.now(UTC),
        }
    )


class _Run:
    """One case: its own database and topic, one dispatch instance, its subscriptions."""

    def __init__(self, kafka: EmbeddedKafka, postgres: EmbeddedPostgres, name: str) -> None:
        self.kafka, self.postgres, self.name = kafka, postgres, name
        self.topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        self.service: DispatchService | None = None
        self.producer = None
        self.dsn = ""
        self.settings: DispatchSettings | None = None

    async def start(self, urls: list[str], geofences: list[dict], **overrides) -> None:
        admin_db = await asyncpg.connect(self.postgres.dsn)
        try:
            database = f"bench_{self.name}_{uuid.uuid4().hex[:6]}"
            await admin_db.execute(f"CREATE DATABASE {database}")
        finally:
            await admin_db.close()
        self.dsn = self.postgres.dsn_for(database)
        await migrate_url(self.dsn)
        await ensure_topics(self.kafka.bootstrap_servers, {self.topic: 6})
        values = dict(
            admin_token=ADMIN_TOKEN,
            kafka_bootstrap_servers=self.kafka.bootstrap_servers,
            database_url=self.dsn,
            incidents_topic=self.topic,
            topic_partitions=6,
            port=0,
            read_timeout_s=1.0,
            connect_timeout_s=0.5,
            write_timeout_s=0.5,
            pool_timeout_s=0.5,
            lease_s=10.0,
            breaker_failures=5,
            breaker_reset_s=2.0,
            allowed_target_networks=["127.0.0.0/8"],  # the bench's receivers
        )
        values.update(overrides)
        settings = self.settings = DispatchSettings(**values)
        self.service = DispatchService(
            settings, bootstrap_servers=self.kafka.bootstrap_servers, database_url=self.dsn
        )
        await self.service.start()
        async with httpx.AsyncClient(
            base_url=self.service.url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as admin:
            for i, (url, fence) in enumerate(zip(urls, geofences, strict=True)):
                response = await admin.post(
                    "/v1/subscriptions",
                    json={
                        "name": f"agency-{i}",
                        "channel": "webhook",
                        "url": url,
                        "geofence": fence,
                    },
                )
                response.raise_for_status()
        self.producer = build_producer(self.kafka.bootstrap_servers, client_id="bench-locator")
        await self.producer.start()
        await asyncio.sleep(3.0)  # consumer group join

    async def publish(self, record: IncidentRecord) -> None:
        assert self.producer is not None
        await self.producer.send(self.topic, encode(record), key=record.incident_id.encode())

    async def drain(self, drain_s: float, *, records: int, endpoint_not: str = "") -> None:
        """Wait until every record is stored and no row (but ``endpoint_not``'s) is pending."""
        assert self.producer is not None
        await self.producer.flush()
        conn = await asyncpg.connect(self.dsn)
        try:
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                stored = await conn.fetchval("SELECT count(*) FROM dispatch_incident_versions")
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM dispatch_deliveries "
                    "WHERE status = 'pending' AND endpoint <> $1",
                    endpoint_not,
                )
                if stored >= records and waiting == 0:
                    return
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def latency(self, *, endpoint_not: str = "") -> dict:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(
                """SELECT count(*) AS n,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY
                       extract(epoch FROM delivered_at - created_at)) AS p50,
                     percentile_cont(0.99) WITHIN GROUP (ORDER BY
                       extract(epoch FROM delivered_at - created_at)) AS p99,
                     max(extract(epoch FROM delivered_at - created_at)) AS worst,
                     extract(epoch FROM max(delivered_at) - min(created_at)) AS span
                   FROM dispatch_deliveries
                   WHERE status = 'delivered' AND endpoint <> $1""",
                endpoint_not,
            )
            by_status = dict(
                await conn.fetch("SELECT status, count(*) FROM dispatch_deliveries GROUP BY 1")
            )
        finally:
            await conn.close()
        return {
            "delivered": row["n"],
            "p50_ms": round(float(row["p50"] or 0) * 1000, 1),
            "p99_ms": round(float(row["p99"] or 0) * 1000, 1),
            "max_ms": round(float(row["worst"] or 0) * 1000, 1),
            "span_s": round(float(row["span"] or 0), 2),
            "rows_by_status": {k: int(v) for k, v in by_status.items()},
        }

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.service is not None:
            await self.service.stop(5.0)


async def case_hang(kafka, postgres, ports, rate: float, duration_s: float, drain_s: float) -> dict:
    """One receiver in ten never answers; the others must not wait for it."""
    run = _Run(kafka, postgres, "hang")
    hung = f"http://127.0.0.1:{ports[0]}"
    try:
        await run.start(
            [f"http://127.0.0.1:{p}/hook" for p in ports],
            [_cell(i) for i in range(len(ports))],
            retry_schedule_s=(0.5, 1.0, 2.0),
        )
        rng = random.Random(7)
        sent = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < duration_s:
            while sent < int(elapsed * rate) + 1:
                await run.publish(_incident(rng))
                sent += 1
            await asyncio.sleep(0.005)
        feed_s = time.monotonic() - start
        await run.drain(drain_s, records=sent, endpoint_not=hung)
        figures = await run.latency(endpoint_not=hung)
    finally:
        await run.stop()
    return {
        "deliveries_per_s": round(figures["delivered"] / max(figures["span_s"], feed_s), 1),
        **figures,
        "incidents_sent": sent,
        "rate_per_s": rate,
        "duration_s": duration_s,
        "target_p99_ms": 100,
    }


async def _stats(port: int) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/stats")).json()


async def case_ordering(
    kafka, postgres, ports, order_rate: float, duration_s: float, fail_s: float, drain_s: float
) -> dict:
    """Receiver 0 fails for ``fail_s`` then recovers; every incident has 5 versions."""
    run = _Run(kafka, postgres, "ordering")
    failing = f"http://127.0.0.1:{ports[0]}"
    try:
        await run.start([f"http://127.0.0.1:{p}/hook" for p in ports], [WHOLE_AREA] * len(ports))
        rng = random.Random(11)
        # (due time, version) of every incident's next version: 1 s after the one before
        live: list[tuple[float, IncidentRecord]] = []
        published = incidents = 0
        start = time.monotonic()
        next_new = start
        while True:
            now = time.monotonic()
            if now - start < duration_s and now >= next_new:
                record = _incident(rng)
                await run.publish(record)
                live.append((now + 1.0, record))
                published += 1
                incidents += 1
                next_new += 1.0 / order_rate
            still = []
            for due, record in live:
                if due > now:
                    still.append((due, record))
                    continue
                # every other incident ends in a cancel (nothing may follow it)
                cancel = record.version == 4 and int(record.incident_id[-1], 16) % 2 == 0
                following = _next_version(record, cancel=cancel)
                await run.publish(following)
                published += 1
                if following.version < 5:
                    still.append((due + 1.0, following))
            live = still
            if now - start >= duration_s and not live:
                break
            await asyncio.sleep(0.005)
        # the failing receiver has recovered by now or soon: wait for everyone
        await asyncio.sleep(max(0.0, fail_s - (time.monotonic() - start)))
        await run.drain(drain_s, records=published)
        healthy = await run.latency(endpoint_not=failing)
        stats = [await _stats(p) for p in ports]
        conn = await asyncpg.connect(run.dsn)
        try:
            failing_rows = dict(
                await conn.fetch(
                    "SELECT status, count(*) FROM dispatch_deliveries WHERE endpoint = $1 "
                    "GROUP BY 1",
                    failing,
                )
            )
        finally:
            await conn.close()
    finally:
        await run.stop()
    return {
        "out_of_order": sum(s["out_of_order"] for s in stats),
        "after_cancel": sum(s["after_cancel"] for s in stats),
        "healthy_p50_ms": healthy["p50_ms"],
        "healthy_p99_ms": healthy["p99_ms"],
        "healthy_max_ms": healthy["max_ms"],
        "healthy_delivered": healthy["delivered"],
        "failing_receiver_requests": stats[0]["received"],
        "failing_receiver_rows": {k: int(v) for k, v in failing_rows.items()},
        "rows_by_status": healthy["rows_by_status"],
        "incidents": incidents,
        "incident_versions": published,
        "fail_s": fail_s,
        "target_out_of_order": 0,
        "target_p99_ms": 100,
    }


async def case_throughput(kafka, postgres, ports, backlog: int, drain_s: float) -> dict:
    """A backlog of ``backlog`` incidents to ten healthy receivers, as fast as it goes:
    through the whole service (the consumer stores, the workers send), and through the
    delivery workers alone (the outbox written first, then an instance that only sends)."""
    urls = [f"http://127.0.0.1:{p}/hook" for p in ports]
    rng = random.Random(13)
    run = _Run(kafka, postgres, "throughput")
    try:
        await run.start(urls, [WHOLE_AREA] * len(ports))
        for _ in range(backlog):
            await run.publish(_incident(rng))
        await run.drain(drain_s, records=backlog)
        whole = await run.latency()
    finally:
        await run.stop()

    run = _Run(kafka, postgres, "sending")
    sender: DispatchService | None = None
    try:
        await run.start(urls, [WHOLE_AREA] * len(ports), workers=False)
        for _ in range(backlog):
            await run.publish(_incident(rng))
        await run.producer.flush()
        conn = await asyncpg.connect(run.dsn)
        try:
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                if await conn.fetchval("SELECT count(*) FROM dispatch_deliveries") >= 10 * backlog:
                    break
                await asyncio.sleep(0.2)
            assert run.settings is not None
            sender = DispatchService(
                run.settings.model_copy(update={"workers": True, "consume": False}),
                bootstrap_servers=kafka.bootstrap_servers,
                database_url=run.dsn,
            )
            started = await conn.fetchval("SELECT now()")
            await sender.start()
            await run.drain(drain_s, records=backlog)
            sent = await conn.fetchrow(
                """SELECT count(*) AS n, extract(epoch FROM max(delivered_at) - $1) AS span
                   FROM dispatch_deliveries WHERE status = 'delivered'""",
                started,
            )
        finally:
            await conn.close()
    finally:
        if sender is not None:
            await sender.stop(5.0)
        await run.stop()
    return {
        "deliveries_per_s": round(whole["delivered"] / max(whole["span_s"], 1e-9), 1),
        "delivered": whole["delivered"],
        "span_s": whole["span_s"],
        "workers_only_deliveries_per_s": round(sent["n"] / max(float(sent["span"] or 0), 1e-9), 1),
        "workers_only_delivered": sent["n"],
        "incidents": backlog,
        "receivers": len(ports),
        "target_deliveries_per_s": 500,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("all", "hang", "ordering", "throughput"), default="all")
    parser.add_argument("--rate", type=float, default=100.0, help="hang: incidents per second")
    parser.add_argument("--duration", type=float, default=15.0, help="hang: seconds of feeding")
    parser.add_argument(
        "--order-rate", type=float, default=4.0, help="ordering: new incidents per second"
    )
    parser.add_argument(
        "--order-duration", type=float, default=35.0, help="ordering: seconds of new incidents"
    )
    parser.add_argument("--fail-s", type=float, default=30.0, help="ordering: failing seconds")
    parser.add_argument("--backlog", type=int, default=600, help="throughput: incidents")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait after")
    parser.add_argument("--receivers", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers:
        receivers_main(args.receivers, args.fail_s)
        return
    logging.basicConfig(level=logging.WARNING)
    kafka = EmbeddedKafka().start()
    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="shotline-bench-")) / "pg").start()
    modes = {"hang": "hang", "ordering": "fail", "throughput": "ok"}
    cases = list(modes) if args.case == "all" else [args.case]
    ports = {case: [free_port() for _ in range(10)] for case in cases}
    spec = ",".join(
        f"{port}:{modes[case] if i == 0 else 'ok'}"
        for case in cases
        for i, port in enumerate(ports[case])
    )
    child = subprocess.Popen(
        [sys.executable, __file__, "--receivers", spec, "--fail-s", str(args.fail_s)],
        stdin=subprocess.DEVNULL,
    )

    async def run_all() -> dict:
        result: dict = {}
        for case in cases:
            if case == "hang":
                result["hang"] = await case_hang(
                    kafka, postgres, ports[case], args.rate, args.duration, args.drain
                )
            elif case == "ordering":
                result["ordering"] = await case_ordering(
                    kafka,
                    postgres,
                    ports[case],
                    args.order_rate,
                    args.order_duration,
                    args.fail_s,
                    args.drain,
                )
            else:
                result["throughput"] = await case_throughput(
                    kafka, postgres, ports[case], args.backlog, args.drain
                )
        return result

    try:
        result = asyncio.run(run_all())
    finally:
        child.terminate()
        child.wait(5)
        postgres.stop()
        kafka.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
