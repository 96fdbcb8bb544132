"""What sensors are told while the broker is frozen or the database is down, against what
reached the detections topic.

Starts its own broker (tansu) and PostgreSQL, runs ingest in this process and drives it with
simulated sensors: each posts one new detection every ``--interval-ms`` and resends what it
was not told is stored (``unknown``, ``unavailable``, a 503 or a transport error), as a real
sensor does. Phases: normal, the broker frozen (SIGSTOP) for ``--pause-s``, recovery, then
PostgreSQL stopped for ``--pause-s`` (half the sensors, the "known" ones, posted a moment
before; the "new" ones never did, so ingest cannot have confirmed their tokens).

Ends with one JSON line: per phase, HTTP statuses and per-item answers; then, per detection,
the last answer against the topic: ``lost`` (told accepted/duplicate, not on the topic: must
be 0), ``refused_but_stored`` (told unavailable or a 503 without items, yet on the topic:
must be 0), copies on the topic beyond one, and 5xx other than 503 (must be 0).

Usage: ``python bench/ingest_faults.py [--sensors 10] [--pause-s 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.ingest.app import IngestService
from services.ingest.registry import add_sensor
from services.ingest.settings import IngestSettings
from shared.db import migrate
from shared.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.kafka import ensure_topics
from shared.schemas import Position

TOPIC = "faults.detections"
STORED = {"accepted", "duplicate"}


class Sensor:
    def __init__(self, sensor_id: str, token: str) -> None:
        self.sensor_id, self.token = sensor_id, token
        self.count = 0
        self.outstanding: dict[str, dict] = {}  # detection_id -> item, until told stored
        self.last_told: dict[str, str] = {}

    def new_item(self) -> dict:
        self.count += 1
        detection_id = f"{self.sensor_id}-{self.count:06d}"
        item = {
            "detection_id": detection_id,
            "sensor_id": self.sensor_id,
            "arrival_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        self.outstanding[detection_id] = item
        return item


async def _drive(
    sensor: Sensor,
    client: httpx.AsyncClient,
    url: str,
    phase: list[str],
    log: list,
    stop,
    interval_s: float,
) -> None:
    headers = {"Authorization": f"Bearer {sensor.token}"}
    while not stop.is_set():
        sensor.new_item()
        batch = list(sensor.outstanding.values())[:100]
        current = phase[0]
        try:
            answer = await client.post(url, json={"detections": batch}, headers=headers)
        except httpx.HTTPError as exc:
            log.append((current, f"transport:{type(exc).__name__}", []))
            await asyncio.sleep(interval_s)
            continue
        try:
            body = answer.json()
        except ValueError:
            log.append((current, answer.status_code, ["not-json"] * len(batch)))
            print(f"not JSON: {answer.status_code} {answer.text[:200]!r}", file=sys.stderr)
            await asyncio.sleep(interval_s)
            continue
        results = body.get("results")
        if results is None:  # an answer about the whole request: nothing stored
            statuses = ["request-" + str(answer.status_code)] * len(batch)
            for item in batch:
                sensor.last_told[item["detection_id"]] = statuses[0]
        else:
            statuses = [r["status"] for r in results]
            for r in results:
                sensor.last_told[r["detection_id"]] = r["status"]
                if r["status"] in STORED or r["status"] in ("rejected", "conflict"):
                    sensor.outstanding.pop(r["detection_id"], None)
        log.append((current, answer.status_code, statuses))
        await asyncio.sleep(interval_s)


async def _read_topic(bootstrap: str) -> Counter:
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    copies: Counter = Counter()
    try:
        idle = 0
        while idle < 5:
            batch = await consumer.getmany(timeout_ms=300)
            got = sum(len(m) for m in batch.values())
            idle = idle + 1 if got == 0 else 0
            for messages in batch.values():
                for message in messages:
                    copies[json.loads(message.value)["detection_id"]] += 1
    finally:
        await consumer.stop()
    return copies


async def main(args: argparse.Namespace) -> dict:
    broker = EmbeddedKafka().start()
    data_dir = Path(tempfile.mkdtemp(prefix="shotline-faults-"))
    database = EmbeddedPostgres(data_dir / "pg").start()
    service = None
    try:
        await ensure_topics(broker.bootstrap_servers, {TOPIC: 3})
        conn = await asyncpg.connect(database.dsn)
        sensors: list[Sensor] = []
        try:
            await migrate(conn)
            for n in range(args.sensors):
                position = Position(lat=40.44, lon=-79.99)
                _, token = await add_sensor(conn, f"s-{n:03d}", "z1", position)
                sensors.append(Sensor(f"s-{n:03d}", token))
        finally:
            await conn.close()
        settings = IngestSettings(
            port=0,
            detections_topic=TOPIC,
            topic_partitions=3,
            produce_timeout_s=args.produce_timeout_s,
            retry_after_s=1,
            last_seen_flush_s=1.0,
        )
        service = IngestService(
            settings, bootstrap_servers=broker.bootstrap_servers, database_url=database.dsn
        )
        await service.start()
        url = f"{service.url}/v1/detections"
        known, new = sensors[: len(sensors) // 2], sensors[len(sensors) // 2 :]
        phase = ["normal"]
        log: list = []
        stop_known, stop_new = asyncio.Event(), asyncio.Event()
        interval = args.interval_ms / 1000
        async with httpx.AsyncClient(timeout=args.produce_timeout_s + 5) as client:
            tasks = [
                asyncio.create_task(_drive(s, client, url, phase, log, stop_known, interval))
                for s in known
            ]
            await asyncio.sleep(3)
            assert broker.pid is not None
            phase[0] = "broker_frozen"
            os.kill(broker.pid, signal.SIGSTOP)
            await asyncio.sleep(args.pause_s)
            os.kill(broker.pid, signal.SIGCONT)
            phase[0] = "broker_resumed"
            await asyncio.sleep(args.produce_timeout_s + 5)  # resends settle
            phase[0] = "database_stopped"
            database.stop()
            tasks += [
                asyncio.create_task(_drive(s, client, url, phase, log, stop_new, interval))
                for s in new
            ]
            await asyncio.sleep(args.pause_s)
            stop_known.set()
            stop_new.set()
            await asyncio.gather(*tasks)
        copies = await _read_topic(broker.bootstrap_servers)
    finally:
        if service is not None:
            await service.stop(5)
        database.stop()
        broker.stop()

    phases: dict[str, dict] = {}
    for name, status, statuses in log:
        entry = phases.setdefault(name, {"requests": 0, "http": Counter(), "items": Counter()})
        entry["requests"] += 1
        entry["http"][str(status)] += 1
        entry["items"].update(statuses)
    for name in ("known", "new"):
        group = known if name == "known" else new
        told = Counter(t for s in group for t in s.last_told.values())
        on_topic = sum(1 for s in group for d in s.last_told if copies[d])
        phases.setdefault("database_stopped", {})[f"{name}_sensors_last_told"] = dict(told)
        phases["database_stopped"][f"{name}_sensors_on_topic"] = on_topic
    lost = refused_but_stored = unknown_stored = unknown_not_stored = 0
    for sensor in sensors:
        for detection_id, told in sensor.last_told.items():
            stored = copies[detection_id] > 0
            if told in STORED and not stored:
                lost += 1
            if (told == "unavailable" or told.startswith("request-")) and stored:
                refused_but_stored += 1
            if told == "unknown":
                unknown_stored += stored
                unknown_not_stored += not stored
    server_errors = sum(
        n
        for p in phases.values()
        for code, n in p.get("http", {}).items()
        if code.isdigit() and int(code) >= 500 and code != "503"
    )
    return {
        "sensors": args.sensors,
        "pause_s": args.pause_s,
        "phases": {
            k: {kk: dict(vv) if isinstance(vv, Counter) else vv for kk, vv in v.items()}
            for k, v in phases.items()
        },
        "detections_on_topic": len(copies),
        "extra_copies_on_topic": sum(c - 1 for c in copies.values() if c > 1),
        "lost": lost,
        "refused_but_stored": refused_but_stored,
        "last_told_unknown_stored": unknown_stored,
        "last_told_unknown_not_stored": unknown_not_stored,
        "http_5xx_other_than_503": server_errors,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10)
    parser.add_argument("--pause-s", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=100.0)
    parser.add_argument("--produce-timeout-s", type=float, default=2.0)
    started = time.monotonic()
    result = asyncio.run(main(parser.parse_args()))
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, sort_keys=True))
