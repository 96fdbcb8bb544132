"""Faults under a steady stream, with counts: what a crash or an outage costs, per case.

Runs the pipeline as separate processes (``shotline infra``, ingest, locator, dispatch; the
machinery of ``bench/pipeline.py``) with this script as their supervisor (a process that
exits is restarted after ``--restart-s``, as systemd or Kubernetes would), a CAD receiver that
records every webhook (its ``webhook-id`` and body), and simulated sensors firing a shot
every ``--shot-every-s`` in turn over ``--zones`` zones through the real HTTP API. A sensor
resends what it was not told is stored (a 503, a transport error), as a real one does.

Cases (in this order, one stream): ``kill9_ingest``, ``kill9_locator``, ``kill9_dispatch``
(SIGKILL, restarted by the supervisor), ``broker_paused`` (SIGSTOP of the broker for
``--fault-s``), ``postgres_stopped`` (SIGSTOP of every PostgreSQL process for ``--fault-s``),
``locator_one_of_two_killed`` and ``dispatch_one_of_two_killed`` (a second instance joins,
then one of the two is SIGKILLed for good).

Per case: detections acknowledged (202, accepted or duplicate) against those on the
detections topic (``detections_lost`` must be 0), shots fired against shots alerted
(``alerts_lost``: shots that reached the locator with enough sensors yet were never alerted,
must be 0), ``second_different`` (a shot alerted under two incident ids, or one webhook-id
with two bodies: must be 0), ``webhook_repeats`` (same webhook-id and body: allowed),
``recovery_s`` (after the fault ends, the longest time any shot fired during or just after
it waited beyond its physics floor; target within 2x the group session timeout).

Usage: ``python bench/faults.py [--cases a,b] [--fault-s 10] [--session-timeout-ms 6000]``.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline as pl

from services.locator.config import LocatorConfig
from services.locator.simulate import scenario, to_detection_in
from shared.geo import haversine_m
from shared.schemas import format_time

CASES = (
    "baseline", "kill9_ingest", "kill9_locator", "kill9_dispatch", "broker_paused",
    "postgres_stopped", "locator_one_of_two_killed", "dispatch_one_of_two_killed",
)
PORTS = {"ingest": 18950, "dispatch": 18960, "dispatch2": 18961, "locator_metrics": 18970,
         "locator2_metrics": 18971, "cad": 18980}


@dataclass
class Cad:
    """Records every webhook: (ack time, webhook-id, body digest, alert data)."""

    port: int
    got: list[tuple[float, str, str, dict[str, Any]]] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, ""
                for line in raw.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "webhook-id":
                        webhook_id = value.strip()
                body = await reader.readexactly(length)
                digest = hashlib.sha256(body).hexdigest()
                self.got.append((time.time(), webhook_id, digest, orjson.loads(body)["data"]))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.close()
        await asyncio.sleep(0.1)


class Supervisor:
    """Restarts a service process that exited (unless it was retired on purpose)."""

    def __init__(self, env: dict[str, str], logs: Path, restart_s: float) -> None:
        self.env, self.logs, self.restart_s = env, logs, restart_s
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[str, dict[str, str]]] = {}
        self.retired: set[str] = set()
        self.restarts: dict[str, list[float]] = defaultdict(list)

    def start(self, name: str, command: str, extra: dict[str, str] | None = None) -> None:
        self.commands[name] = (command, extra or {})
        self.processes[name] = pl.start_process(
            f"{name}-{len(self.restarts[name])}", [command], {**self.env, **(extra or {})},
            self.logs,
        )

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, process in list(self.processes.items()):
                if process.poll() is not None and name not in self.retired:
                    await asyncio.sleep(self.restart_s)
                    self.restarts[name].append(time.time())
                    command, extra = self.commands[name]
                    self.start(name, command, extra)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def restarted(self, name: str, *, after: float) -> None:
        """Returns once ``name`` was restarted after ``after`` (POSIX s)."""
        while not self.restarts[name] or self.restarts[name][-1] < after:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    def kill9(self, name: str, *, for_good: bool = False) -> None:
        if for_good:
            self.retired.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes[name].pid, signal.SIGKILL)

    def stop_all(self) -> None:
        self.retired.update(self.processes)
        for process in self.processes.values():
            pl.stop_process(process)


@dataclass
class Fired:
    zone: str
    shot_time: float  # POSIX s
    floor_s: float
    detection_ids: list[str]


class Stream:
    """A shot every ``every_s`` in turn over the arrays, each pulse posted when heard;
    unstored answers resent after 0.5 s (up to 30 s), as sensors do."""

    def __init__(self, arrays: list, tokens: dict[str, str], every_s: float,
                 config: LocatorConfig) -> None:
        self.arrays, self.tokens, self.every_s, self.config = arrays, tokens, every_s, config
        self.http = pl.RawHttp("127.0.0.1", PORTS["ingest"], 32)
        self.fired: list[Fired] = []
        self.stored: set[str] = set()  # detection ids told accepted or duplicate
        self.statuses: dict[str, int] = defaultdict(int)
        self.rng = np.random.default_rng(5)
        self._n = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._fire()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _fire(self) -> None:
        array = self.arrays[self._n % len(self.arrays)]
        self._n += 1
        start = datetime.now(UTC) - timedelta(seconds=0.5)  # the shot 0.5 s from now
        sim = scenario("shot", array, start=start, rng=self.rng)
        if not sim.detections:
            return
        truth = sim.truth[0].times[0]
        first = min(sim.detections, key=lambda d: d.arrival_time)
        reach = max(float(haversine_m(first.position.lat, first.position.lon, s.lat, s.lon))
                    for s in array.sensors)
        floor = ((first.arrival_time - truth).total_seconds()
                 + min(reach, self.config.max_range_m) / pl.SPEED_OF_SOUND_10C
                 + self.config.window_margin_s + self.config.ingest_lateness_s)
        ids = []
        for d in sim.detections:
            item = to_detection_in(d)
            item["detection_id"] = f"f{self._n}-{d.detection_id}"[-128:]
            ids.append(item["detection_id"])
            task = asyncio.create_task(self._post_when_heard(d.arrival_time.timestamp(),
                                                             d.sensor_id, item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.fired.append(Fired(array.sensors[0].zone, truth.timestamp(), floor, ids))

    async def _post_when_heard(self, at: float, sensor_id: str, item: dict) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        item["arrival_time"] = format_time(datetime.fromtimestamp(at, UTC))
        body = orjson.dumps({"detections": [item]})
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                status, payload = await asyncio.wait_for(self.http.request(
                    "POST", "/v1/detections",
                    {"Authorization": f"Bearer {self.tokens[sensor_id]}",
                     "Content-Type": "application/json"}, body), 5)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                self.statuses["transport_error"] += 1
                await asyncio.sleep(0.5)
                continue
            if status == 202:
                result = orjson.loads(payload)["results"][0]["status"]
                self.statuses[result] += 1
                if result in ("accepted", "duplicate"):
                    self.stored.add(item["detection_id"])
                    return
            else:
                self.statuses[f"http_{status}"] += 1
            await asyncio.sleep(0.5)


async def topic_detection_ids(bootstrap: str, topic: str) -> set[str]:
    """Every detection id on the detections topic (read from the start)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    ids: set[str] = set()
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not batch:
                idle += 1
                continue
            idle = 0
            for records in batch.values():
                for r in records:
                    ids.add(orjson.loads(r.value)["detection_id"])
    finally:
        await consumer.stop()
    return ids


def _processes_of(needle: str) -> list[int]:
    return [p for p in pl._by_cmdline(needle) if p != os.getpid()]


async def inject(case: str, sup: Supervisor, state: Any, data_dir: Path, fault_s: float,
                 env: dict[str, str]) -> tuple[float, float]:
    """Run the fault; returns (start, end) POSIX times (end: restarted / resumed / killed)."""
    start = time.time()
    if case == "baseline":  # no fault: what the stream costs without one
        return start, start
    if case.startswith("kill9_"):
        name = case.removeprefix("kill9_")
        sup.kill9(name)
        await sup.restarted(name, after=start)
        return start, sup.restarts[name][-1]
    if case in ("broker_paused", "postgres_stopped"):
        needle = "tansu" if case == "broker_paused" else str(data_dir / "pgdata")
        pids = _processes_of(needle)
        if not pids:
            raise RuntimeError(f"{case}: no process found for {needle}")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault_s)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        return start, time.time()
    # one of two instances killed for good: the second joined during the warm-up
    name = "locator2" if case.startswith("locator") else "dispatch2"
    sup.kill9(name, for_good=True)
    return start, time.time()


def assess(case: str, fired: list[Fired], stored: set[str], on_topic: set[str],
           got: list[tuple[float, str, str, dict[str, Any]]], window: tuple[float, float],
           fault: tuple[float, float], min_sensors: int) -> dict[str, Any]:
    lo, hi = window
    shots = [f for f in fired if lo <= f.shot_time < hi]
    stored_ids = {d for f in shots for d in f.detection_ids if d in stored}
    by_zone: dict[str, list[tuple[float, float, float, str]]] = defaultdict(list)
    bodies: dict[str, set[str]] = defaultdict(set)
    repeats = 0
    seen_ids: set[str] = set()
    for ack, webhook_id, digest, data in got:
        first = datetime.fromisoformat(data["shot_time"].replace("Z", "+00:00")).timestamp()
        last = datetime.fromisoformat(data["last_shot_time"].replace("Z", "+00:00")).timestamp()
        by_zone[data["zone"]].append((first, last, ack, data["incident_id"]))
        if webhook_id in seen_ids:
            repeats += 1
        seen_ids.add(webhook_id)
        bodies[webhook_id].add(digest)
    alerted, lost, second, waits, recovered = 0, 0, 0, [], False
    for f in shots:
        # a shot is alerted by the version that first shows it: as the first round, or as
        # the latest round of an update (a shot within 60 m and 60 s of an incident's last)
        hits = [(ack, inc) for first, last, ack, inc in by_zone.get(f.zone, [])
                if abs(first - f.shot_time) < 0.5 or abs(last - f.shot_time) < 0.5]
        heard = sum(1 for d in f.detection_ids if d in stored)
        if hits:
            alerted += 1
            if len({inc for _, inc in hits}) > 1:
                second += 1
            first_ack = min(a for a, _ in hits)
            recovered = recovered or f.shot_time > fault[1]
            if f.shot_time >= fault[0] - 8:  # fired during the fault or just before it
                waits.append(first_ack - max(fault[1], f.shot_time + f.floor_s))
        elif heard >= min_sensors:
            lost += 1
    changed_bodies = sum(1 for digests in bodies.values() if len(digests) > 1)
    return {
        "case": case,
        "detections_acknowledged": len(stored_ids),
        "detections_on_topic": len(stored_ids & on_topic),
        "detections_lost": len(stored_ids - on_topic),
        "shots_fired": len(shots),
        "shots_alerted": alerted,
        "alerts_lost": lost,
        "second_different": second + changed_bodies,
        "shots_under_two_incidents": second,
        "webhook_id_with_two_bodies": changed_bodies,
        "alerted_after_fault": recovered,
        "webhook_repeats": repeats,
        "recovery_s": round(max([0.0, *waits]), 2),
        "fault_s": round(fault[1] - fault[0], 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--fault-s", type=float, default=10.0)
    parser.add_argument("--before-s", type=float, default=6.0)
    parser.add_argument("--after-s", type=float, default=20.0)
    parser.add_argument("--shot-every-s", type=float, default=0.5)
    parser.add_argument("--zones", type=int, default=12)
    parser.add_argument("--restart-s", type=float, default=1.0)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"--cases: unknown case {c!r}; expected some of {', '.join(CASES)}")
    config = LocatorConfig()
    pl.PORTS.update({"ingest": PORTS["ingest"], "dispatch": PORTS["dispatch"],
                     "locator_metrics": PORTS["locator_metrics"]})
    data_dir = Path(tempfile.mkdtemp(prefix="shotline-bench-faults-"))
    env = pl._env(data_dir, args.session_timeout_ms)
    # dispatch retries quickly, so a restarted receiver path is not what recovery measures
    sup = Supervisor(env, data_dir, args.restart_s)
    infra = pl.start_process("infra", ["infra"], env, data_dir)
    cad = Cad(PORTS["cad"])
    results = []
    stop_watch, stop_stream = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        from shared.runtime import read_state

        deadline = time.monotonic() + 120
        while (state := read_state(data_dir)) is None:
            if infra.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"shotline infra did not start; see {data_dir}/infra.log")
            await asyncio.sleep(0.5)
        for name in ("ingest", "locator", "dispatch"):
            sup.start(name, name)
        await pl.wait_http(PORTS["ingest"], "/readyz", 120, sup.processes["ingest"], "ingest")
        await pl.wait_http(PORTS["dispatch"], "/readyz", 120, sup.processes["dispatch"],
                           "dispatch")
        await pl.wait_http(PORTS["locator_metrics"], "/metrics", 180, sup.processes["locator"],
                           "locator")
        tasks.append(asyncio.create_task(sup.watch(stop_watch)))
        arrays = pl.build_city(args.zones)
        tokens = await pl.register(state.database_url, arrays)
        await cad.start()
        await pl.subscribe("faults CAD", PORTS["cad"], arrays)
        await asyncio.sleep(args.session_timeout_ms / 1000)
        stream = Stream(arrays, tokens, args.shot_every_s, config)
        tasks.append(asyncio.create_task(stream.run(stop_stream)))
        windows = []
        for case in cases:
            if case == "locator_one_of_two_killed":
                sup.start("locator2", "locator",
                          {"SHOTLINE_LOCATOR_METRICS_PORT": str(PORTS["locator2_metrics"])})
            elif case == "dispatch_one_of_two_killed":
                sup.start("dispatch2", "dispatch",
                          {"SHOTLINE_DISPATCH_PORT": str(PORTS["dispatch2"])})
            if case.endswith("_two_killed"):  # the second instance joins and takes partitions
                await asyncio.sleep(2 * args.session_timeout_ms / 1000 + 3)
            lo = time.time()
            await asyncio.sleep(args.before_s)
            fault = await inject(case, sup, state, data_dir, args.fault_s, env)
            await asyncio.sleep(args.after_s)
            windows.append((case, (lo, time.time()), fault))
            pl._say(f"{case}: fault {fault[1] - fault[0]:.1f} s")
        stop_stream.set()
        await asyncio.sleep(12)  # the last shots' windows close and their alerts arrive
        on_topic = await topic_detection_ids(state.bootstrap_servers, "shotline.detections")
        for case, window, fault in windows:
            results.append(assess(case, stream.fired, stream.stored, on_topic, cad.got, window,
                                  fault, min_sensors=config.min_sensors))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        statuses = dict(stream.statuses)
    finally:
        stop_watch.set()
        stop_stream.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 40)
        await cad.stop()
        sup.stop_all()
        pl.stop_process(infra)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    limit = 2 * args.session_timeout_ms / 1000
    print(json.dumps({
        "cases": results,
        "sensor_statuses": statuses,
        "session_timeout_s": args.session_timeout_ms / 1000,
        "detections_lost": sum(r["detections_lost"] for r in results),
        "alerts_lost": sum(r["alerts_lost"] for r in results),
        "second_different": sum(r["second_different"] for r in results),
        "max_recovery_s": max((r["recovery_s"] for r in results), default=None),
        "recovered_within_2x_session_timeout": all(r["recovery_s"] <= limit for r in results),
    }))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, pl._interrupt)
    asyncio.run(main())
