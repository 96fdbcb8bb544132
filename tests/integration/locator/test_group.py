"""Locator instances in one consumer group: crash and restart, and splitting the partitions."""

from __future__ import annotations

import pytest

from services.locator import service as locator_service
from shared.schemas import IncidentRecord
from tests.conftest import Topics
from tests.integration.locator.conftest import (
    Published,
    Shots,
    eventually,
    gunfire,
    located,
    nearest,
    past,
    produce,
    simulate_zone,
)

ZONES = ("zone-0", "zone-1", "zone-2")  # one per partition


def _content(incident: IncidentRecord) -> dict:
    """What must be identical between two publications of the same (id, version)."""
    return incident.model_dump(mode="json", exclude={"published_at"})


def assert_consistent(published: Published) -> None:
    """Each (incident_id, version) has one content, and version n is the incident with n
    rounds. (Not every version is published: a poll publishes only the latest version of
    each incident it changed, and a replay may split polls differently.)"""
    contents: dict[tuple[str, int], dict] = {}
    for incident in published.incidents:
        key = (incident.incident_id, incident.version)
        assert contents.setdefault(key, _content(incident)) == _content(incident), key
        assert incident.rounds == incident.version, key


def assert_one_incident_per_shot(published: Published, zones: list[Shots]) -> None:
    latest = list(published.latest().values())
    for shots in zones:
        for event in gunfire(shots.truth):
            dist, incident = nearest(latest, event)
            assert dist < 10 and incident.rounds == len(event.times), event.event_id
            others = [
                i for i in latest if i.incident_id != incident.incident_id
                and nearest([i], event)[0] < 60 and i.zone == shots.zone
                and abs((i.shot_time - event.times[0]).total_seconds()) < 5
            ]
            assert others == [], f"{event.event_id} has more than one incident id"


@pytest.mark.parametrize(
    "successor_poll_budget_s",
    [
        None,  # as deployed
        # The successor pauses for I/O after every zone's poll: splitting polls must not
        # change a single decision, so it re-publishes the first instance's versions.
        0.0,
    ],
)
async def test_a_crash_mid_stream_loses_nothing_and_republishes_identical_versions(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published,
    successor_poll_budget_s: float | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recent events: their incidents are still open (updatable) when the first instance dies,
    # so its commits stay behind them and the successor must rebuild them from the topic.
    zones = [
        simulate_zone(zone, ["burst", "shot", "burst", "shot"], start=past(70), spacing_s=15,
                      seed=20 + p)
        for p, zone in enumerate(ZONES)
    ]
    halves = []
    for shots in zones:
        cut = next(i for i, d in enumerate(shots.detections) if d.detection_id.startswith("e2-"))
        halves.append((shots.detections[:cut], shots.detections[cut:]))
    for p, (first, _) in enumerate(halves):
        await produce(kafka_bootstrap, topics.detections, first, partition=p)

    first_instance = await start_locator()
    group = first_instance.settings.group_id
    await eventually(lambda: len(published.records) >= 3, what="some incidents")
    await first_instance.abort()  # a crash: no clean stop, no final commit
    before_restart = len(published.records)

    if successor_poll_budget_s is not None:
        monkeypatch.setattr(locator_service, "_POLL_BUDGET_S", successor_poll_budget_s)
    for p, (_, second) in enumerate(halves):
        await produce(kafka_bootstrap, topics.detections, second, partition=p)
    await start_locator(group_id=group)
    events = [e for shots in zones for e in gunfire(shots.truth)]
    await eventually(lambda: located(published, events, 10.0), timeout_s=20, what="all shots")

    assert len(published.records) > before_restart
    assert_consistent(published)
    assert_one_incident_per_shot(published, zones)
    # The open incidents of the first half were re-published by the successor, unchanged.
    republished = [i for i in published.incidents[before_restart:]
                   if (i.incident_id, i.version) in
                   {(j.incident_id, j.version) for j in published.incidents[:before_restart]}]
    assert republished


async def test_two_instances_in_one_group_split_the_zones_and_together_publish_everything(
    kafka_bootstrap: str, topics: Topics, start_locator, published: Published
) -> None:
    first = await start_locator()
    second = await start_locator(group_id=first.settings.group_id)
    partitions = set(range(topics.partitions))

    def split() -> bool:
        a = {tp.partition for tp in first.assignment}
        b = {tp.partition for tp in second.assignment}
        return bool(a) and bool(b) and not (a & b) and (a | b) == partitions

    await eventually(split, what="the group to split the partitions")
    zones = [
        simulate_zone(zone, ["burst", "shot"], start=past(200), spacing_s=15, seed=40 + p)
        for p, zone in enumerate(ZONES)
    ]
    for p, shots in enumerate(zones):
        await produce(kafka_bootstrap, topics.detections, shots.detections, partition=p)

    events = [e for shots in zones for e in gunfire(shots.truth)]
    await eventually(lambda: located(published, events, 10.0), timeout_s=20, what="all shots")
    assert first.zones and second.zones
    assert first.zones.isdisjoint(second.zones)
    assert first.zones | second.zones == set(ZONES)
    assert_consistent(published)
    assert_one_incident_per_shot(published, zones)
