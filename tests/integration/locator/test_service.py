"""The locator service on a real broker: detections in, incidents out, offsets committed last."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import ConsumerRecord

from services.locator import metrics
from services.locator.service import LocatorService
from shared.geo import haversine_m
from shared.kafka import build_producer, encode
from shared.schemas import detection_key
from tests.conftest import Topics
from tests.integration.locator.conftest import (
    Published,
    eventually,
    gunfire,
    located,
    nearest,
    past,
    produce,
    simulate_zone,
)


async def test_a_shot_becomes_an_incident_with_its_location_rounds_and_sensors(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    shots = simulate_zone("zone-a", ["shot"], start=past(120))
    (truth,) = shots.truth
    await produce(kafka_bootstrap, topics.detections, shots.detections, partition=0)

    await start_locator()
    await eventually(lambda: located(published, [truth], 10.0), what="the shot's incident")

    (key, incident), *rest = published.records
    assert rest == []  # one shot, one version
    assert key == incident.incident_id.encode()  # keyed by incident id
    assert (incident.zone, incident.rounds, incident.version) == ("zone-a", 1, 1)
    assert incident.event == "created"
    assert haversine_m(incident.location.lat, incident.location.lon, truth.lat, truth.lon) < 10
    heard = {d.sensor_id for d in shots.detections}
    assert incident.sensor_count == len(incident.sensors_used) >= 4
    assert set(incident.sensors_used) <= heard
    used_keys = set(incident.round_details[0].detection_keys)
    assert used_keys <= {detection_key(*d.key) for d in shots.detections}
    assert incident.first_detection_received_at == min(
        d.received_at for d in shots.detections if detection_key(*d.key) in used_keys
    )
    assert incident.classification in ("gunfire", "probable_gunfire")


async def test_a_burst_is_one_incident_id_with_rising_versions(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    shots = simulate_zone("zone-burst", ["burst"], start=past(120), seed=3)
    (truth,) = shots.truth
    assert len(truth.times) >= 3
    await produce(kafka_bootstrap, topics.detections, shots.detections, partition=1)

    await start_locator()
    await eventually(lambda: located(published, [truth], 10.0), what="every round")

    ids = {i.incident_id for i in published.incidents}
    assert len(ids) == 1
    # Rising, ending with every round. (A backlog decides several rounds per poll, and a
    # poll publishes only the latest version of each incident it changed.)
    versions = [i.version for i in published.incidents]
    assert versions == sorted(set(versions)) and versions[-1] == len(truth.times)
    assert [i.rounds for i in published.incidents] == versions
    assert [i.event for i in published.incidents] == [
        "created" if v == 1 else "updated" for v in versions
    ]


def _count_and_sum(histogram: object) -> tuple[float, float]:
    """(observations, their sum) of a prometheus Histogram so far."""
    samples = {s.name: s.value for s in histogram.collect()[0].samples}  # type: ignore[attr-defined]
    base = histogram._name  # type: ignore[attr-defined]
    return samples[f"{base}_count"], samples[f"{base}_sum"]


def _observed_since(histogram: object, before: tuple[float, float]) -> tuple[float, float]:
    """(observations since ``before``, their mean)."""
    count, total = _count_and_sum(histogram)
    n = count - before[0]
    return n, (total - before[1]) / n if n else float("nan")


async def test_delivery_and_window_close_delays_say_how_late_detections_and_windows_were(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    # A shot ingest accepted two minutes ago, read only now (a locator that was down): every
    # detection reached the locator ~120 s after received_at, and its window, due ~7 s after
    # the shot, closed ~113 s late. An SRE reads both beside the processing latency.
    shots = simulate_zone("zone-late", ["shot"], start=past(120))
    (truth,) = shots.truth
    delivered_before = _count_and_sum(metrics.DELIVERY_DELAY)
    closed_before = _count_and_sum(metrics.WINDOW_CLOSE_DELAY)
    await produce(kafka_bootstrap, topics.detections, shots.detections, partition=0)

    await start_locator()
    await eventually(lambda: located(published, [truth], 10.0), what="the shot's incident")

    delivered, delivery_mean_s = _observed_since(metrics.DELIVERY_DELAY, delivered_before)
    assert delivered == len(shots.detections)  # one observation per detection consumed
    assert 110 < delivery_mean_s < 180
    closed, close_mean_s = _observed_since(metrics.WINDOW_CLOSE_DELAY, closed_before)
    assert closed >= 1  # at least the shot's window
    assert 90 < close_mean_s < 180


async def test_poison_goes_to_the_dead_letter_topic_with_its_reason_and_processing_goes_on(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    shots = simulate_zone("zone-p", ["shot"], start=past(120), seed=5)
    future = orjson.loads(orjson.dumps(shots.detections[0].model_dump(mode="json")))
    future["schema_version"] = 99
    poison = [b"{not json", orjson.dumps(future), orjson.dumps({"schema_version": 1})]
    offsets = await produce(kafka_bootstrap, topics.detections, poison, partition=2)
    await produce(kafka_bootstrap, topics.detections, shots.detections, partition=2)
    before = metrics.DEAD_LETTERS._value.get()

    await start_locator()
    await eventually(lambda: located(published, shots.truth, 10.0), what="the incident")

    dlq = AIOKafkaConsumer(
        topics.detections + ".dlq",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await dlq.start()
    try:
        letters = []
        for _ in range(50):
            batch = await dlq.getmany(timeout_ms=200)
            letters.extend(m for ms in batch.values() for m in ms)
            if len(letters) >= 3:
                break
    finally:
        await dlq.stop()
    assert [m.value for m in letters] == poison
    reasons = [dict(m.headers)["shotline-dlq-reason"].decode() for m in letters]
    assert reasons[0].startswith("invalid JSON")
    assert "unknown schema_version 99" in reasons[1]
    assert reasons[2].startswith("invalid detection record")
    sources = [dict(m.headers)["shotline-dlq-source"].decode() for m in letters]
    assert sources == [f"{topics.detections}/2/{o}" for o in offsets]
    assert metrics.DEAD_LETTERS._value.get() - before == 3


async def _committed(bootstrap: str, group_id: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_commit_never_passes_detections_an_open_incident_still_needs(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    # An old shot (its incident can no longer be updated: finished) then a recent burst
    # (its incident stays open for the update window) then, later on the partition, noise.
    old = simulate_zone("zone-c", ["shot"], start=past(300), seed=7)
    recent = simulate_zone("zone-c", ["burst"], start=past(20), seed=8)
    recent_dets = [d.model_copy(update={"detection_id": "r-" + d.detection_id})
                   for d in recent.detections]
    old_offsets = await produce(kafka_bootstrap, topics.detections, old.detections, partition=0)
    recent_offsets = await produce(kafka_bootstrap, topics.detections, recent_dets, partition=0)

    service = await start_locator()
    group = service.settings.group_id
    await eventually(
        lambda: located(published, old.truth + recent.truth, 10.0), what="both incidents"
    )
    # The open incident's earliest detection used is where a successor must start reading.
    latest = published.latest()
    _, open_incident = nearest(latest.values(), recent.truth[0])
    used = {k for r in open_incident.round_details for k in r.detection_keys}
    by_key = {detection_key(*d.key): o for d, o in zip(recent_dets, recent_offsets, strict=True)}
    first_needed = min(by_key[k] for k in used)
    tp = TopicPartition(topics.detections, 0)
    await service.stop(5)  # clean stop: due windows published, open ones handed back

    committed = await _committed(kafka_bootstrap, group, tp)
    assert committed is not None
    assert old_offsets[-1] < committed <= first_needed


async def test_a_drifting_sensor_clock_is_flagged_once(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published, caplog
) -> None:
    # Eight bursts; one sensor's clock is off by tens of milliseconds.
    shots = simulate_zone("zone-h", ["burst"] * 8, start=past(400), seed=11)
    bad = shots.array.sensors[5].sensor_id
    from datetime import timedelta

    skewed = [
        d.model_copy(update={"arrival_time": d.arrival_time + timedelta(milliseconds=40)})
        if d.sensor_id == bad
        else d
        for d in shots.detections
    ]
    await produce(kafka_bootstrap, topics.detections, skewed, partition=1)
    caplog.set_level(logging.INFO, logger="shotline.locator")

    await start_locator(health_interval_s=0.05)
    await eventually(
        lambda: metrics.SENSOR_FLAGGED.labels("zone-h", bad)._value.get() == 1,
        what="the bad sensor to be flagged",
    )
    await eventually(lambda: located(published, gunfire(shots.truth), 15.0), what="incidents")
    warnings = [r for r in caplog.records if r.getMessage().startswith("sensor flagged")]
    assert [r.sensor_id for r in warnings] == [bad]  # once, and only that sensor
    healthy = {d.sensor_id for d in shots.detections} - {bad}
    assert all(metrics.SENSOR_FLAGGED.labels("zone-h", s)._value.get() == 0 for s in healthy)


async def test_back_pressure_pauses_fetching_and_resumes_when_drained(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    # Recent detections stay undecided until their windows' deadlines: more than the cap.
    shots = simulate_zone("zone-bp", ["burst", "burst"], start=past(2), spacing_s=0.5, seed=13)
    await produce(kafka_bootstrap, topics.detections, shots.detections, partition=0)

    service = await start_locator(max_retained=20, resume_retained=10)
    await eventually(lambda: service.paused, what="fetching to pause")
    assert service.retained > 20
    await eventually(lambda: located(published, shots.truth, 15.0), timeout_s=20, what="drain")
    await eventually(lambda: not service.paused, what="fetching to resume")
    assert service.retained <= 10


class _AckGate:
    """Stands between the service and its real producer: records really reach Kafka, but the
    service hears of each ack only when the test opens the gate (or gets a failure instead).
    Fault injection around the real client, to make a slow or failing broker reproducible."""

    def __init__(self, service, *, fail_first: int = 0) -> None:
        self.open = asyncio.Event()
        self.sent = 0
        self._fail_first = fail_first
        self._send = service._producer.send
        self._relays: list[asyncio.Task[None]] = []
        service._producer.send = self.send

    async def send(self, topic: str, *args: object, **kwargs: object) -> asyncio.Future[object]:
        ack = await self._send(topic, *args, **kwargs)
        self.sent += 1
        gate: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        fail = self.sent <= self._fail_first

        async def relay() -> None:
            await self.open.wait()
            result = await ack
            if fail:
                gate.set_exception(KafkaTimeoutError("injected: no ack in time"))
            else:
                gate.set_result(result)

        self._relays.append(asyncio.create_task(relay()))
        return gate


async def test_offsets_wait_for_the_ack_while_other_windows_are_served(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    # A finished shot: its incident is forgotten as soon as it is sent, so only the missing
    # ack stands between its detections and the commit.
    first = simulate_zone("zone-ack1", ["shot"], start=past(300), seed=21)
    second = simulate_zone("zone-ack2", ["shot"], start=past(300), seed=22)
    service = await start_locator(commit_interval_s=0.05)
    gate = _AckGate(service)
    offsets = await produce(kafka_bootstrap, topics.detections, first.detections, partition=0)
    tp = TopicPartition(topics.detections, 0)

    await eventually(lambda: located(published, first.truth, 10.0), what="the first incident")
    await asyncio.sleep(0.5)  # several commit intervals, all without the ack
    assert (await _committed(kafka_bootstrap, service.settings.group_id, tp) or 0) <= offsets[0]

    # The loop is not stuck waiting for that ack: another zone's shot is published meanwhile.
    await produce(kafka_bootstrap, topics.detections, second.detections, partition=1)
    await eventually(lambda: located(published, second.truth, 10.0), what="the second incident")

    gate.open.set()
    await eventually_committed(kafka_bootstrap, service.settings.group_id, tp, offsets[-1] + 1)


async def test_a_failed_publish_is_retried_and_the_offsets_then_move_on(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    shot = simulate_zone("zone-retry", ["shot"], start=past(300), seed=23)
    service = await start_locator(commit_interval_s=0.05)
    gate = _AckGate(service, fail_first=1)
    gate.open.set()
    offsets = await produce(kafka_bootstrap, topics.detections, shot.detections, partition=2)

    await eventually(lambda: gate.sent >= 2, what="the failed incident to be sent again")
    # Written twice (the first write did land; only its ack was lost): one id, one version.
    await eventually(lambda: len(published.incidents) == 2, what="both copies")
    assert len({(i.incident_id, i.version) for i in published.incidents}) == 1
    tp = TopicPartition(topics.detections, 2)
    await eventually_committed(kafka_bootstrap, service.settings.group_id, tp, offsets[-1] + 1)


async def eventually_committed(
    bootstrap: str, group_id: str, tp: TopicPartition, offset: int, timeout_s: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while (committed := await _committed(bootstrap, group_id, tp)) != offset:
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {committed}, expected {offset}")
        await asyncio.sleep(0.1)


@dataclass
class _FetchLog:
    """What the service's consumer returned: when (monotonic) each non-empty fetch came back,
    and how many records all of them held."""

    returned_at: list[float] = field(default_factory=list)
    read: int = 0


def _watch_fetches(service: LocatorService) -> _FetchLog:
    """Wraps the service's real consumer's ``getmany`` to log its non-empty fetches."""
    assert service._consumer is not None
    log = _FetchLog()
    getmany = service._consumer.getmany

    async def timed_getmany(
        *args: object, **kwargs: object
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        batch = await getmany(*args, **kwargs)
        if batch:
            log.returned_at.append(time.monotonic())
            log.read += sum(len(records) for records in batch.values())
        return batch

    service._consumer.getmany = timed_getmany
    return log


async def test_fetches_are_spaced_by_the_fetch_interval_and_every_record_is_still_read(
    kafka_bootstrap: str, topics: Topics, start_locator
) -> None:
    # A live tail: detections arrive one at a time, every 40 ms. Fetching as fast as they
    # come would cost the broker a request (and the loop a step) per record; with the
    # interval at 250 ms the loop takes them a few at a time, at most once per interval.
    shots = simulate_zone("zone-fetch", ["burst"], start=past(1), seed=5)
    service = await start_locator(fetch_interval_ms=250)
    fetches = _watch_fetches(service)
    producer = build_producer(kafka_bootstrap, client_id="test-tail", linger_ms=0)
    await producer.start()
    try:
        for detection in shots.detections:
            await producer.send_and_wait(
                topics.detections, encode(detection), key=detection.zone.encode(), partition=1
            )
            await asyncio.sleep(0.04)
    finally:
        await producer.stop()
    await eventually(lambda: fetches.read == len(shots.detections), what="every detection read")

    assert len(shots.detections) >= 10
    gaps = [b - a for a, b in itertools.pairwise(fetches.returned_at)]
    assert gaps and min(gaps) >= 0.24, gaps
    assert len(fetches.returned_at) < len(shots.detections) / 2  # a few records per fetch


async def test_a_backlog_is_read_without_waiting_out_the_fetch_interval(
    kafka_bootstrap: str, topics: Topics, start_locator
) -> None:
    # A locator coming back to a backlog: every fetch returns a full batch, and the next one
    # follows at once. (Held 250 ms each, 8 batches of 5 would take about 2 s.)
    shots = simulate_zone("zone-backlog", ["burst", "burst"], start=past(30), seed=6)
    await produce(kafka_bootstrap, topics.detections, shots.detections[:40], partition=0)
    service = await start_locator(fetch_interval_ms=250, max_poll_records=5)
    fetches = _watch_fetches(service)
    # (The first fetch may have come back before the wrapper was in place.)
    await eventually(lambda: fetches.read >= 40 - 5, what="the backlog read")
    assert len(shots.detections) >= 40
    full_batches = fetches.returned_at[:-1]  # (the last may be short)
    gaps = [b - a for a, b in itertools.pairwise(full_batches)]
    assert gaps and max(gaps) < 0.2, gaps
