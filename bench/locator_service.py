"""Locator service throughput and processing latency on a pre-loaded detections topic.

Starts an embedded broker, writes the simulator's mixed traffic (``scenario("mixed")``: gunfire
bursts, fireworks, other impulses, per-sensor noise, echoes, diffraction, a bad clock) for
``--zones`` zones x ``--hours`` hours of event time to a 6-partition topic, then runs one
:class:`LocatorService` (one process, one core for the service; the broker has the other) over
the backlog and measures:

* ``detections_per_s`` — detections consumed per second from the first fetch to the last
  (the backlog: the service runs flat out);
* ``p50_ms``/``p99_ms`` — the service's processing latency per published incident version
  (consumed → Kafka ack, physics wait excluded; exactly what the
  ``shotline_locator_processing_latency_seconds`` histogram observes, but unbucketed) under a
  *live* stream: a separate process (which also generates it, so the service's heap holds
  only the service's own state) writes fresh mixed traffic of many zones, aiming at
  min(5,000, 50 % of the measured backlog throughput) detections/s for ``--live-s`` seconds,
  each detection when its ``received_at`` comes; ``live_rate_dps`` is the rate it actually
  had (over its central 98 %: a few late detections trail the rest), and ``pacer_lag_p99_ms``
  how late that process handed detections to Kafka (if it is starved of CPU, the stream is
  late, not the service). Latency at saturation is just queue length, so it is reported
  separately as ``backlog_p99_ms``. Where the live time goes: ``ack_p50/p99_ms`` (send → Kafka
  ack), ``delivery_p50/p99_ms`` (received_at → consumed: the stream's own lateness, which
  windows wait for while their partition is behind) and ``close_delay_p50/p99_ms`` (window
  deadline → closed). Like ``main``,
  the bench tunes the garbage collector once the service started
  (``shared.runtime.tune_gc_for_latency``); ``--live-dps`` sets another rate;
* ``engine_only_dps`` — the same detections through bare ZoneEngines (no Kafka, no JSON): the
  ceiling the service is compared with (``service_share`` = detections_per_s / that).

Targets on a 2-core machine: detections_per_s >= 5,000 per core; p99 < 50 ms.
``--profile`` prints the hottest functions of the engine-only run (cProfile) to stderr.
``--warm-s W`` runs the live stream W s longer and measures only its last ``--live-s``: the
steady state of long-lived zones rather than the start of fresh ones (report it beside the
default figure).
``--live-only`` (with ``--live-dps``) skips the backlog and engine runs, to compare changes.
The service (this process, and the bare engines) runs pinned to core 0, the broker and the
pacer to the other cores (``service_core_pinned`` = 1): the target is per core, and unpinned the
kernel lets the broker's threads and the pacer preempt the service's event loop.
``--share-cores`` lets them share every core, as before 2026-12-02's fifth machine.
Usage: ``python bench/locator_service.py [--zones 8] [--hours 1] [--live-s 30] [--live-dps N]
[--warm-s W] [--profile] [--live-only] [--share-cores]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.locator import metrics
from services.locator.engine import ZoneEngine
from services.locator.scoring import ScoringModel
from services.locator.service import LocatorService
from services.locator.settings import LocatorSettings
from services.locator.simulate import build_array, scenario
from services.locator.warmup import warm_up_kernels
from shared.embedded import EmbeddedKafka
from shared.kafka import build_producer, encode, ensure_topics
from shared.runtime import tune_gc_for_latency
from shared.schemas import DetectionRecord

PARTITIONS = 6
#: The service's own core; the broker and the pacer run on the others (see start_broker).
SERVICE_CORES = {0}
OTHER_CORES = set(range(1, os.cpu_count() or 1)) or SERVICE_CORES


def start_broker(pin: bool) -> EmbeddedKafka:
    """An embedded broker; with ``pin``, on OTHER_CORES and this process on SERVICE_CORES.

    Why: the target is per core, and in production the broker and the sensors' traffic run
    elsewhere. Unpinned, the kernel spreads the broker's threads, the pacer and the service
    over both cores of the bench machine, and the service's event loop is preempted by them.
    (The broker's threads inherit the affinity it is started with.)
    """
    if pin:
        os.sched_setaffinity(0, OTHER_CORES)
    try:
        return EmbeddedKafka().start()
    finally:
        if pin:
            os.sched_setaffinity(0, SERVICE_CORES)


class Samples:
    """Stands in for a Histogram: keeps every observation (and when it was made)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.at: list[float] = []  # perf_counter of each observation

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.at.append(time.perf_counter())

    def since(self, start: float) -> list[float]:
        """The observations made at or after perf_counter ``start``."""
        return [v for v, t in zip(self.values, self.at, strict=True) if t >= start]


def traffic(
    zones: int, hours: float, start: datetime, prefix: str = "bench"
) -> list[DetectionRecord]:
    """Mixed traffic of every zone, interleaved by ingest time as a live topic would be."""
    out: list[DetectionRecord] = []
    for z in range(zones):
        array = build_array(zone=f"{prefix}-{z}", seed=z)
        made = scenario(
            "mixed",
            array,
            start=start,
            rng=np.random.default_rng(100 + z),
            duration_s=hours * 3600,
        )
        out.extend(made.detections)
    out.sort(key=lambda d: d.received_at)
    return out


def engine_only(detections: list[DetectionRecord], profile: bool) -> float:
    """Detections/s through bare engines fed in ingest order, polled as the service would."""
    scorer = ScoringModel.load()
    config = LocatorSettings().locator_config()
    # As the service does in start(): loading numba's cached kernels (~1.7 s on a slow
    # machine, more without a cache) is start-up, not per-detection work.
    warm_up_kernels(config)
    engines: dict[str, ZoneEngine] = {}
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    for i, det in enumerate(detections):
        engine = engines.get(det.zone)
        if engine is None:
            engine = engines[det.zone] = ZoneEngine(det.zone, config, scorer)
        engine.add(det, i, det.received_at)
        deadline = engine.next_deadline()
        if deadline is not None and deadline <= det.received_at:
            engine.poll(det.received_at)
    for engine in engines.values():
        engine.flush()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - t0
    if profiler:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(25)
        buf.write("\n--- by own time ---\n")
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(20)
        print(buf.getvalue(), file=sys.stderr)
    return len(detections) / elapsed


async def preload(bootstrap: str, topic: str, detections: list[DetectionRecord]) -> None:
    producer = build_producer(bootstrap, client_id="bench-preload", linger_ms=20)
    await producer.start()
    try:
        pending = []
        for det in detections:
            pending.append(await producer.send(topic, value=encode(det), key=det.zone.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def bench_settings(suffix: str) -> LocatorSettings:
    return LocatorSettings.model_validate(
        {
            "detections_topic": f"bench-det-{suffix}",
            "incidents_topic": f"bench-inc-{suffix}",
            "topic_partitions": PARTITIONS,
            "group_id": f"bench-{suffix}",
            "kafka_session_timeout_ms": 6000,
            "metrics_port": -1,
        }
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] * 1000 if ordered else float("nan")


async def _wait_consumed(target: float, timeout_s: float) -> tuple[float, float]:
    """(first, last) perf_counter instants of consumption until ``target`` is reached."""
    consumed = metrics.DETECTIONS_CONSUMED._value
    base = consumed.get()
    await _first_consumed()
    t_first = time.perf_counter()
    deadline = t_first + timeout_s
    # (10 ms steps: finer polling would cost the service's process measurable CPU.)
    while consumed.get() - base < target and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return t_first, time.perf_counter()


async def _first_consumed() -> None:
    consumed = metrics.DETECTIONS_CONSUMED._value
    base = consumed.get()
    while consumed.get() == base:  # noqa: ASYNC110 - polling a metric, no event to wait on
        await asyncio.sleep(0.002)


async def _cpu_shares(
    broker_pid: int | None, seconds: float, after_s: float = 0.0
) -> tuple[float, float]:
    """(service, broker) CPU per wall second over ``seconds`` of the stream, starting
    ``after_s`` after its first consumed detection (its late tail, trickling in for a while
    after, excluded)."""
    await _first_consumed()
    await asyncio.sleep(after_s)
    t0, own0, broker0 = time.perf_counter(), time.process_time(), cpu_seconds(broker_pid)
    await asyncio.sleep(seconds)
    span = time.perf_counter() - t0
    return (time.process_time() - own0) / span, (cpu_seconds(broker_pid) - broker0) / span


async def backlog(bootstrap: str, detections: list[DetectionRecord]) -> dict[str, float]:
    """Throughput over a pre-loaded topic."""
    settings = bench_settings(uuid.uuid4().hex[:8])
    await ensure_topics(
        bootstrap, {settings.detections_topic: PARTITIONS, settings.incidents_topic: PARTITIONS}
    )
    await preload(bootstrap, settings.detections_topic, detections)
    samples = Samples()
    metrics.PROCESSING_LATENCY = samples  # type: ignore[assignment]  # unbucketed samples
    service = LocatorService(settings, bootstrap_servers=bootstrap, scorer=ScoringModel.load())
    await service.start()
    tune_gc_for_latency()  # as main does once its services started
    try:
        t_first, t_last = await _wait_consumed(len(detections), 600)
    finally:
        await service.stop(15)
    return {
        "detections_per_s": len(detections) / (t_last - t_first),
        "backlog_incidents": float(len(samples.values)),
        "backlog_p50_ms": percentile(samples.values, 0.5),
        "backlog_p99_ms": percentile(samples.values, 0.99),
    }


def _central_rate(instants: list[float]) -> float:
    """Records per second of a stream over its central 98 %: a few detections trail far
    behind their shot (late sensors), so not first to last."""
    at = sorted(instants)
    lo, hi = at[len(at) // 100], at[len(at) * 99 // 100]
    return 0.98 * len(at) / max(hi - lo, 1e-9)


def _pace(
    bootstrap: str, topic: str, rate_dps: float, seconds: float, counted: Any, pin: bool
) -> None:
    """(In a child process.) Generate fresh mixed traffic and produce each record when the
    wall clock reaches its ``received_at``.

    The traffic is built here, not in the service's process, so the service's heap (and its
    garbage collector) holds only what the service itself keeps. Puts (records, zones,
    detections/s) on ``counted`` just before the first record is due.
    """
    if pin:
        os.sched_setaffinity(0, OTHER_CORES)  # beside the broker, off the service's core
    per_zone_dps = 1.43  # scenario("mixed"): about 5,150 detections per zone-hour
    zones = max(1, round(rate_dps / per_zone_dps))
    draft = datetime.now(UTC)
    detections = traffic(zones, seconds / 3600, draft, prefix=f"live-{uuid.uuid4().hex[:6]}")
    # A short stream of fresh zones runs below the hourly average: add zones until the
    # stream's own rate reaches the aim (within 3 %).
    for _ in range(3):
        short = rate_dps / _central_rate([d.received_at.timestamp() for d in detections])
        if short < 1.03:
            break
        more = max(1, round(zones * (short - 1)))
        detections += traffic(more, seconds / 3600, draft, prefix=f"live-{uuid.uuid4().hex[:6]}")
        detections.sort(key=lambda d: d.received_at)
        zones += more
    # The stream starts 3 s after its records are encoded: encoding them takes seconds at
    # thousands of zones, and a stream starting before that ends would begin with a burst of
    # late records (measured: pacer lag p99 ~1 s at 5,000/s, all at the start).
    probe = detections[: min(len(detections), 2000)]
    t0 = time.perf_counter()
    for d in probe:
        encode(d.model_copy(update={"received_at": d.received_at}))
    encode_s = (time.perf_counter() - t0) * len(detections) / max(1, len(probe))
    shift = datetime.now(UTC) + timedelta(seconds=3 + 1.5 * encode_s) - draft
    items = [
        (
            (d.received_at + shift).timestamp(),
            d.zone.encode(),
            encode(
                d.model_copy(
                    update={
                        "arrival_time": d.arrival_time + shift,
                        "received_at": d.received_at + shift,
                    }
                )
            ),
        )
        for d in detections
    ]
    del detections
    counted.put((len(items), zones, _central_rate([item[0] for item in items])))

    lags: list[float] = []  # how late each record was handed to the producer, s

    async def go() -> None:
        # Written as ingest writes them (its producer settings: linger 2 ms).
        producer = build_producer(bootstrap, client_id="bench-live")
        await producer.start()
        try:
            pending = []
            for at, key, value in items:
                delay = at - time.time()
                if delay > 0.001:  # records due within the same millisecond go together
                    await asyncio.sleep(delay)
                lags.append(max(0.0, -delay))
                pending.append(await producer.send(topic, value=value, key=key))
                if len(pending) > 2000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(go())
    counted.put((percentile(lags, 0.5), percentile(lags, 0.99)))


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc); NaN if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def live(
    broker: EmbeddedKafka,
    rate_dps: float,
    seconds: float,
    warm_s: float = 0.0,
    pin: bool = True,
) -> dict[str, float]:
    """Latency under a live stream of ``rate_dps`` detections/s (fresh mixed traffic).

    With ``warm_s``, the stream runs that much longer and only its last ``seconds`` are
    measured: the zones have then heard their sensors and hold a steady state (full pending
    windows, open incidents), as a long-running locator's do. (Measured on 2026-11-25, that
    steady state costs the service more than a fresh stream, not less, and the embedded
    broker's fetches slow down as its topic grows.)
    """
    bootstrap = broker.bootstrap_servers
    settings = bench_settings(uuid.uuid4().hex[:8])
    await ensure_topics(
        bootstrap, {settings.detections_topic: PARTITIONS, settings.incidents_topic: PARTITIONS}
    )
    samples, acks, delivery, close = Samples(), Samples(), Samples(), Samples()
    metrics.PROCESSING_LATENCY = samples  # type: ignore[assignment]
    metrics.PUBLISH_ACK_LATENCY = acks  # type: ignore[assignment]
    metrics.DELIVERY_DELAY = delivery  # type: ignore[assignment]
    metrics.WINDOW_CLOSE_DELAY = close  # type: ignore[assignment]
    service = LocatorService(settings, bootstrap_servers=bootstrap, scorer=ScoringModel.load())
    await service.start()
    tune_gc_for_latency()  # as main does once its services started
    ctx = multiprocessing.get_context("spawn")
    counted = ctx.Queue()
    pacer = ctx.Process(
        target=_pace,
        args=(bootstrap, settings.detections_topic, rate_dps, seconds + warm_s, counted, pin),
    )
    pacer.start()
    try:
        total, zones, offered = await asyncio.get_running_loop().run_in_executor(
            None, counted.get, True, 600
        )
        # CPU shares over the stream: the service (this process) and the broker share the
        # machine's cores with the pacer.
        shares = asyncio.create_task(_cpu_shares(broker.pid, 0.9 * seconds, warm_s))
        first = asyncio.create_task(_first_consumed())
        consumed = asyncio.create_task(_wait_consumed(total, seconds + warm_s + 60))
        await first
        measured_from = time.perf_counter() + warm_s
        await consumed
        service_share, broker_share = await shares
        await asyncio.sleep(8)  # the last windows close after their physics deadline
        # (In an executor: a blocking get here would stall the service's loop, and with it
        # every window still open, until the pacer reports.)
        pacer_lag_p50, pacer_lag_p99 = await asyncio.get_running_loop().run_in_executor(
            None, counted.get, True, 10
        )
    finally:
        await service.stop(15)
        pacer.join(10)
    latencies, ack_latencies = samples.since(measured_from), acks.since(measured_from)
    delivery_delays, close_delays = delivery.since(measured_from), close.since(measured_from)
    return {
        "live_rate_dps": offered,
        "live_detections": float(total),
        "live_zones": float(zones),
        "live_warm_s": warm_s,
        "incidents": float(len(latencies)),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "ack_p50_ms": percentile(ack_latencies, 0.5),
        "ack_p99_ms": percentile(ack_latencies, 0.99),
        "delivery_p50_ms": percentile(delivery_delays, 0.5),
        "delivery_p99_ms": percentile(delivery_delays, 0.99),
        "close_delay_p50_ms": percentile(close_delays, 0.5),
        "close_delay_p99_ms": percentile(close_delays, 0.99),
        "live_service_cpu_share": service_share,
        "live_broker_cpu_share": broker_share,
        "pacer_lag_p50_ms": pacer_lag_p50,
        "pacer_lag_p99_ms": pacer_lag_p99,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zones", type=int, default=8, help="zones of the backlog")
    ap.add_argument("--hours", type=float, default=1.0, help="event time per backlog zone")
    ap.add_argument("--live-s", type=float, default=30.0, help="length of the live stream")
    ap.add_argument("--profile", action="store_true", help="cProfile the engine-only run")
    ap.add_argument(
        "--warm-s",
        type=float,
        default=0.0,
        help="run the live stream this much longer and measure only its last --live-s",
    )
    ap.add_argument(
        "--live-dps",
        type=float,
        default=None,
        help="rate of the live stream (default: min(5,000, half the backlog throughput))",
    )
    ap.add_argument(
        "--live-only",
        action="store_true",
        help="only the live stream (needs --live-dps): for comparing runs of one change",
    )
    ap.add_argument(
        "--share-cores",
        action="store_true",
        help="let the service, the broker and the pacer share every core (default: the "
        "service alone on core 0)",
    )
    args = ap.parse_args()
    pin = not args.share_cores and OTHER_CORES != SERVICE_CORES
    if args.live_only:
        if not args.live_dps:
            ap.error("--live-only needs --live-dps")
        broker = start_broker(pin)
        try:
            only = asyncio.run(live(broker, args.live_dps, args.live_s, args.warm_s, pin))
        finally:
            broker.stop()
        only["service_core_pinned"] = float(pin)
        print(json.dumps({k: round(v, 2) for k, v in only.items()}))
        return

    start = datetime.now(UTC) - timedelta(hours=args.hours + 1)  # all in the past: a backlog
    detections = traffic(args.zones, args.hours, start)
    print(f"{len(detections)} detections in {args.zones} zones", file=sys.stderr)
    if pin:
        os.sched_setaffinity(0, SERVICE_CORES)  # the bare engines on the service's core too
    engine_dps = engine_only(detections, args.profile)
    broker = start_broker(pin)
    try:
        result = asyncio.run(backlog(broker.bootstrap_servers, detections))
    finally:
        broker.stop()
    backlog_count = float(len(detections))
    del detections  # the live phase's service should not carry the backlog's records
    rate = args.live_dps or min(5000.0, 0.5 * result["detections_per_s"])
    # A fresh broker: the embedded one's fetches cost more the more it stores.
    broker = start_broker(pin)
    try:
        result.update(asyncio.run(live(broker, rate, args.live_s, args.warm_s, pin)))
    finally:
        broker.stop()
    result.update(
        engine_only_dps=engine_dps,
        service_share=result["detections_per_s"] / engine_dps,
        backlog_detections=backlog_count,
        service_core_pinned=float(pin),
    )
    print(json.dumps({k: round(v, 2) for k, v in result.items()}))


if __name__ == "__main__":
    main()
