"""The locator service on a real broker: detections in, incidents out, offsets committed last."""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.locator import metrics
from shared.geo import haversine_m
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
    versions = [i.version for i in published.incidents]
    assert versions == list(range(1, len(truth.times) + 1))
    assert [i.rounds for i in published.incidents] == versions
    assert [i.event for i in published.incidents] == ["created"] + ["updated"] * (
        len(versions) - 1
    )


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
