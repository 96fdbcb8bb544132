"""ZoneEngine: detections in event time -> incident versions, deadlines, replay, retention."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.locator.association import gate
from services.locator.config import LocatorConfig
from services.locator.engine import ZoneEngine, latest_versions
from services.locator.evidence import Score, ShotEvidence
from services.locator.simulate import build_array, scenario
from shared.schemas import AcousticFeatures, DetectionRecord, IncidentRecord, detection_key
from tests.unit.locator.conftest import (
    SENSORS,
    T0,
    ZONE,
    C,
    Scene,
    placeholder_scorer,
    to_local,
)

SOURCE = np.array([140.0, -60.0, 4.0])
ELSEWHERE = np.array([-420.0, 430.0, 2.0])


def replay(
    detections: list[DetectionRecord], config: LocatorConfig, engine: ZoneEngine | None = None
) -> tuple[ZoneEngine, list[IncidentRecord]]:
    """Feed in arrival order with now = arrival time, poll after each, flush at the end."""
    engine = engine or ZoneEngine(ZONE, config, placeholder_scorer)
    out: list[IncidentRecord] = []
    for offset, det in enumerate(detections):
        engine.add(det, offset, det.arrival_time)
        out.extend(engine.poll(det.arrival_time))
    out.extend(engine.flush())
    return engine, out


def latest(records: list[IncidentRecord]) -> dict[str, IncidentRecord]:
    out: dict[str, IncidentRecord] = {}
    for r in records:
        if r.incident_id not in out or r.version > out[r.incident_id].version:
            out[r.incident_id] = r
    return out


def error_m(record: IncidentRecord, source: np.ndarray) -> float:
    return float(np.hypot(*(to_local(record.location.lat, record.location.lon) - source[:2])))


def test_burst_from_one_place_is_one_incident_with_a_round_count(
    scene: Scene, config: LocatorConfig
) -> None:
    for k, at in enumerate([1.0, 1.4, 1.55, 2.3]):  # 0.15-0.75 s apart: windows overlap
        scene.shot(SOURCE, at, skip=(k,))
    _, records = replay(scene.sorted(), config)
    final = latest(records)
    assert len(final) == 1
    (incident,) = final.values()
    assert incident.rounds == 4 and incident.version == 4
    # Overlapping windows close in the same poll: only the latest of those versions is
    # published (see test_a_poll_publishes_only_the_latest_version_of_each_incident).
    assert all(r.event == ("created" if r.version == 1 else "updated") for r in records)
    assert error_m(incident, SOURCE) < 0.1
    assert [r.rounds for r in records] == [r.version for r in records]
    assert sorted({r.version for r in records}) == [r.version for r in records]


def test_a_poll_publishes_only_the_latest_version_of_each_incident(
    scene: Scene, config: LocatorConfig
) -> None:
    for at in (1.0, 1.4, 1.55, 2.3):  # a burst of four rounds ...
        scene.shot(SOURCE, at)
    scene.shot(ELSEWHERE, 1.02)  # ... and another shooter, all read before one poll (a backlog)
    detections = scene.sorted()
    _, polled_often = replay(detections, config)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for i, det in enumerate(detections):
        engine.add(det, i, detections[-1].arrival_time)
    at_once = engine.poll(detections[-1].arrival_time + timedelta(seconds=5))
    assert sorted((r.version, r.rounds) for r in at_once) == [(1, 1), (4, 4)]
    # Each is the very version the run polled after every detection published: a version's
    # content is fixed by its (incident_id, version), whichever poll decided it.
    published = {(r.incident_id, r.version): r for r in polled_often}
    for record in at_once:
        again = published[record.incident_id, record.version]
        assert record.model_dump(exclude={"published_at"}) == again.model_dump(
            exclude={"published_at"}
        )


def test_latest_versions_keeps_each_incidents_last_version_in_place(
    scene: Scene, config: LocatorConfig
) -> None:
    _, (base,) = replay(scene.shot(SOURCE, 1.0), config)

    def rec(incident: str, version: int) -> IncidentRecord:
        return base.model_copy(update={"incident_id": incident, "version": version})

    cases = [
        # (incident, version) in          -> out
        ([], []),
        ([("a", 1)], [("a", 1)]),
        ([("a", 1), ("b", 1)], [("a", 1), ("b", 1)]),  # distinct incidents: all kept, in order
        ([("a", 1), ("a", 2), ("a", 3)], [("a", 3)]),  # a burst decided in one poll
        ([("a", 1), ("b", 1), ("a", 2)], [("b", 1), ("a", 2)]),  # a's last stays where it was
        ([("a", 4), ("b", 2), ("b", 3), ("a", 5)], [("b", 3), ("a", 5)]),
    ]
    for given, expected in cases:
        out = latest_versions([rec(i, v) for i, v in given])
        assert [(r.incident_id, r.version) for r in out] == expected, given


def test_two_shooters_at_once_in_different_places_are_two_incidents(
    scene: Scene, config: LocatorConfig
) -> None:
    scene.shot(SOURCE, 1.0)
    scene.shot(ELSEWHERE, 1.02)
    scene.shot(ELSEWHERE, 1.5)
    _, records = replay(scene.sorted(), config)
    final = sorted(latest(records).values(), key=lambda r: r.rounds)
    assert [r.rounds for r in final] == [1, 2]
    assert error_m(final[0], SOURCE) < 0.1 and error_m(final[1], ELSEWHERE) < 0.1


def test_dirty_stream_echoes_noise_bad_clock_and_missed_sensors(
    scene: Scene, config: LocatorConfig
) -> None:
    scene.pulse(3, 0.4)  # a door slam heard by one sensor only
    shot = scene.shot(SOURCE, 1.0, skip=(8,), late={6: 0.2})  # 8 missed it; 6's clock is off
    scene.pulse(0, (shot[0].arrival_time - T0).total_seconds() + 0.12)  # echo at sensor 0
    scene.pulse(10, 2.4)  # unrelated
    engine, records = replay(scene.sorted(), config)
    (incident,) = latest(records).values()
    assert incident.rounds == 1
    assert "s06" in incident.sensors_rejected and "s06" not in incident.sensors_used
    assert "s08" not in incident.sensors_used
    assert incident.sensor_count == 10
    assert error_m(incident, SOURCE) < 0.1
    assert engine.noise >= 2  # the slam and the unrelated pulse were decided as noise


def test_window_closes_at_the_physics_deadline_not_later(
    scene: Scene, config: LocatorConfig
) -> None:
    detections = sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for i, det in enumerate(detections):
        engine.add(det, i, det.arrival_time)
    first = detections[0]
    # the farthest any pulse of its source can trail the seed: max_range_m / c (a function of
    # the pulse alone, not of the sensors heard so far)
    expected = first.arrival_time + timedelta(
        seconds=config.max_range_m / C + config.window_margin_s + config.ingest_lateness_s
    )
    deadline = engine.next_deadline()
    assert deadline is not None
    assert abs((deadline - expected).total_seconds()) < 1e-5
    assert engine.poll(deadline - timedelta(milliseconds=1)) == []
    (record,) = engine.poll(deadline)
    assert record.published_at == deadline and record.rounds == 1


def test_a_shot_whose_pulses_all_reach_us_late_is_still_located_whole(
    scene: Scene, config: LocatorConfig
) -> None:
    # The array was cut off for 9 s (a backhaul outage); then each sensor posts what it heard,
    # one after another, 30 ms apart. Every physics deadline has long passed when the first
    # pulse arrives: deciding it alone would call it noise and drop the rest as late.
    shot = sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time)
    back = T0 + timedelta(seconds=10)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    records: list[IncidentRecord] = []
    for i, det in enumerate(shot):
        received = back + timedelta(milliseconds=30 * i)
        engine.add(det.model_copy(update={"received_at": received}), i, received)
        records.extend(engine.poll(received))  # as the service polls, caught up
    assert records == []  # still waiting: ingest_lateness_s after the first one was received
    records.extend(engine.poll(back + timedelta(seconds=config.ingest_lateness_s)))
    (incident,) = latest(records).values()
    assert incident.sensor_count == len(SENSORS)
    assert error_m(incident, SOURCE) < 0.1
    assert engine.late == 0


def test_an_ingest_clock_running_ahead_does_not_hold_windows_back(
    scene: Scene, config: LocatorConfig
) -> None:
    # Ingest stamps received_at a minute ahead of the locator's clock (its NTP failed): the
    # wait for late shots must not turn into a minute's delay of every alert.
    shot = sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for i, det in enumerate(shot):
        ahead = det.received_at + timedelta(seconds=60)
        engine.add(det.model_copy(update={"received_at": ahead}), i, det.received_at)
    deadline = engine.next_deadline()
    assert deadline is not None and deadline < shot[0].arrival_time + timedelta(seconds=10)
    (record,) = engine.poll(deadline)
    assert record.sensor_count == len(SENSORS)


def test_replaying_the_same_detections_yields_identical_ids_versions_and_locations(
    scene: Scene, config: LocatorConfig
) -> None:
    scene.shot(SOURCE, 1.0, late={2: 0.3})
    scene.shot(SOURCE, 1.6)
    scene.pulse(5, 1.2)
    detections = scene.sorted()
    _, first = replay(detections, config)
    _, again = replay(detections, config)
    key = [(r.incident_id, r.version, r.rounds, r.location) for r in first]
    assert key == [(r.incident_id, r.version, r.rounds, r.location) for r in again]
    # the same detections fed in a shuffled order (data, not arrival order, decides)
    shuffled = list(detections)
    np.random.default_rng(1).shuffle(shuffled)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for i, det in enumerate(shuffled):
        engine.add(det, i, detections[0].arrival_time)
    third = engine.flush()
    assert key == [(r.incident_id, r.version, r.rounds, r.location) for r in third]


def test_later_round_within_the_update_window_updates_the_same_incident(
    scene: Scene,
) -> None:
    config = LocatorConfig(default_temperature_c=20.0, update_window_s=30.0)
    scene.shot(SOURCE, 1.0)
    scene.shot(SOURCE + np.array([8.0, 0.0, 0.0]), 20.0)  # 19 s later, 8 m away: same incident
    scene.shot(SOURCE, 60.0)  # 40 s after the last round: a new incident
    _, records = replay(scene.sorted(), config)
    assert [(r.event, r.version) for r in records] == [
        ("created", 1), ("updated", 2), ("created", 1)
    ]
    assert records[0].incident_id == records[1].incident_id != records[2].incident_id
    assert records[1].round_details[1].shot_time > records[1].round_details[0].shot_time


def test_duplicates_are_ignored_and_late_detections_dropped(
    scene: Scene, config: LocatorConfig
) -> None:
    detections = scene.sorted() or sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for i, det in enumerate(detections):
        engine.add(det, i, det.arrival_time)
        engine.add(det, i, det.arrival_time)  # a retry of the same detection
    assert engine.duplicates == len(detections)
    (record,) = engine.flush()
    engine.add(detections[3], 99, detections[-1].arrival_time)  # replayed after the decision
    late = scene.pulse(1, 0.5)  # before the decided seed: its window is gone
    engine.add(late, 100, detections[-1].arrival_time)
    assert engine.late == 1 and engine.duplicates == len(detections) + 1
    assert engine.flush() == [] and record.rounds == 1


def test_adding_never_moves_a_held_retained_offset_only_polling_does(
    config: LocatorConfig,
) -> None:
    # The service caches the retained offset and asks again only after polls (and while it
    # is None): mixed traffic (bursts, fireworks, echoes, noise, a bad clock), offsets rising
    # as on a partition, polled only now and then so adds pile up between polls.
    array = build_array(zone=ZONE, seed=3)
    made = scenario("mixed", array, start=T0, rng=np.random.default_rng(5), duration_s=900)
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    held, moved_by_polls = engine.min_retained_offset(), 0
    for offset, det in enumerate(sorted(made.detections, key=lambda d: d.received_at)):
        engine.add(det, offset, det.received_at)
        now_held = engine.min_retained_offset()
        assert held is None or now_held == held
        held = now_held
        if offset % 7 == 0:
            engine.poll(det.received_at)
            moved_by_polls += engine.min_retained_offset() != held
            held = engine.min_retained_offset()
    assert moved_by_polls > 10  # (the polls did move it: the check above was exercised)


def test_the_engine_keeps_what_it_reads_of_a_detection_not_the_record(
    scene: Scene, config: LocatorConfig
) -> None:
    # Why it matters: a held record is nine objects the garbage collector keeps walking; a
    # dropped one is freed at once. What the engine copies must still reach the incident.
    scored: list[ShotEvidence] = []

    def scorer(evidence: ShotEvidence) -> Score:
        scored.append(evidence)
        return placeholder_scorer(evidence)

    engine = ZoneEngine(ZONE, config, scorer)
    shot = [  # (copies: the scene holds its own records)
        d.model_copy(update={"features": AcousticFeatures(
            peak_db=100.0 + i, snr_db=20.0 + i, rise_time_ms=1.0 + i, duration_ms=2.0 + i,
            spectral_centroid_hz=900.0 + i,
        )})
        for i, d in enumerate(sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time))
    ]
    expected = {d.sensor_id: d.features for d in shot}
    first_received = min(d.received_at for d in shot)
    keys = sorted(detection_key(*d.key) for d in shot)
    refs = [weakref.ref(d) for d in shot]
    for i, det in enumerate(shot):
        engine.add(det, i, det.arrival_time)
    del shot, det
    gc.collect()
    assert engine.pending_count() == len(refs)
    assert all(ref() is None for ref in refs)  # every record freed while its pulse is held

    (record,) = engine.flush()
    assert record.first_detection_received_at == first_received
    assert sorted(record.round_details[0].detection_keys) == keys
    # (scored twice: the round by itself, its kind, then the incident's version)
    evidence = scored[-1]
    assert {p.sensor_id for p in evidence.pulses} == set(expected)
    for p in evidence.pulses:
        f = expected[p.sensor_id]
        assert (p.peak_db, p.snr_db, p.rise_time_ms, p.duration_ms, p.spectral_centroid_hz) == (
            f.peak_db, f.snr_db, f.rise_time_ms, f.duration_ms, f.spectral_centroid_hz
        )


def test_min_retained_offset_covers_open_windows_and_updatable_incidents(
    scene: Scene, config: LocatorConfig
) -> None:
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    assert engine.min_retained_offset() is None
    shot = sorted(scene.shot(SOURCE, 1.0), key=lambda d: d.arrival_time)
    for i, det in enumerate(shot):
        engine.add(det, 10 + i, det.arrival_time)
    assert engine.min_retained_offset() == 10  # pending window
    (record,) = engine.flush()
    assert engine.min_retained_offset() == 10  # the incident may still get rounds
    expiry = engine.next_deadline()
    assert expiry is not None and expiry > record.last_shot_time + timedelta(
        seconds=config.update_window_s
    )
    noise = scene.pulse(4, 30.0)
    engine.add(noise, 50, noise.arrival_time)
    assert engine.min_retained_offset() == 10
    engine.poll(expiry)  # incident can no longer be updated; the noise window closed too
    assert engine.min_retained_offset() is None
    assert engine.next_deadline() is None


def test_sensor_with_a_drifting_clock_is_flagged(config: LocatorConfig) -> None:
    from services.locator.health import is_drifting

    scene = Scene()
    rng = np.random.default_rng(5)
    for k in range(8):
        src = np.r_[rng.uniform(-400, 400, 2), 3.0]
        scene.shot(src, 10.0 * k + 1.0, late={7: 0.015})  # sensor 7 is 15 ms late
    engine, records = replay(scene.sorted(), config)
    health = engine.sensor_health()
    assert len(latest(records)) == 8
    assert is_drifting(health["s07"], config)
    assert not any(is_drifting(h, config) for sid, h in health.items() if sid != "s07")


def _wall_scene(echo_snr_db: float, rounds: tuple[float, ...] = (1.0,)) -> Scene:
    """Shots at SOURCE plus their reflections off a wall along x = -100 m.

    A plane reflector makes every echo look like a shot from the mirror image of the source
    (x = -340 m), fired at the same instant; only sensors on the source's side of the wall
    (x > -100) hear it. The direct sound is at 30 dB SNR.
    """
    scene = Scene()
    image = SOURCE * np.array([1.0, 1.0, 1.0]) + np.array([-2 * (SOURCE[0] + 100.0), 0.0, 0.0])
    same_side = tuple(i for i, s in enumerate(SENSORS) if s[0] > -100.0)
    for at in rounds:
        scene.shot(SOURCE, at, snr_db=30.0)
        scene.shot(image, at, snr_db=echo_snr_db, sensors=same_side)
    return scene


def test_shot_with_echoes_off_a_wall_is_one_incident_not_two(config: LocatorConfig) -> None:
    # with the heard-share check off, only the echo rule stands between echoes and a phantom
    cfg = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0)
    without = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0,
                            reject_echo_fits=False)
    assert len(latest(replay(_wall_scene(18.0).sorted(), without)[1])) == 2  # a phantom ...
    engine, records = replay(_wall_scene(18.0).sorted(), cfg)
    (incident,) = latest(records).values()  # ... that the echo rule removes
    assert error_m(incident, SOURCE) < 0.1 and incident.sensor_count == 12
    assert engine.echoes >= 1


def test_burst_with_wall_echoes_is_one_incident_with_every_round(config: LocatorConfig) -> None:
    # later rounds trail earlier ones by one interval at every sensor: not echoes
    cfg = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0)
    _, records = replay(_wall_scene(18.0, rounds=(1.0, 1.6, 2.25)).sorted(), cfg)
    (incident,) = latest(records).values()
    assert incident.rounds == 3 and error_m(incident, SOURCE) < 0.1


def test_an_echo_measured_a_fraction_of_a_db_louder_is_still_an_echo(
    config: LocatorConfig,
) -> None:
    # SNR estimates scatter (~0.5 dB between two reports of one arrival in Pittsburgh): a
    # reverberation measured 0.5 dB above its 30 dB direct sound must not become a phantom
    cfg = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0)
    assert len(latest(replay(_wall_scene(30.5).sorted(), cfg)[1])) == 1
    strict = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0,
                           echo_level_margin_db=0.0)
    assert len(latest(replay(_wall_scene(30.5).sorted(), strict)[1])) == 2


def test_a_louder_later_source_is_not_taken_for_an_echo(config: LocatorConfig) -> None:
    # same timing as a wall echo, but louder than the shot: no echo can be, a second source
    cfg = LocatorConfig(default_temperature_c=20.0, min_heard_share=0.0)
    _, records = replay(_wall_scene(36.0).sorted(), cfg)
    assert len(latest(records)) == 2


def test_pending_count_is_the_number_of_undecided_detections(
    scene: Scene, config: LocatorConfig
) -> None:
    scene.shot(SOURCE, 1.0)
    dets = scene.sorted()
    engine = ZoneEngine(ZONE, config, placeholder_scorer)
    for offset, det in enumerate(dets):
        engine.add(det, offset, det.arrival_time)
    engine.add(dets[0], 99, dets[0].arrival_time)  # a duplicate is not pending twice
    assert engine.pending_count() == len(dets)
    engine.flush()
    assert engine.pending_count() == 0


def test_the_plain_float_shortcuts_change_no_decision(
    config: LocatorConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two thirds of real closes are a lonely pulse, decided without numpy by
    # _could_be_located. It must agree with associate's first step (enough other sensors
    # inside the seed's physical gate, association.gate) on every close of mixed traffic
    # (noise, echoes, bursts, fireworks, a bad clock). Dropping it changes no record and no
    # count.
    array = build_array(density_per_sq_mi=15, area_sq_mi=2.0, seed=4)
    made = scenario(
        "mixed", array, start=datetime(2026, 3, 1, tzinfo=UTC),
        rng=np.random.default_rng(7), duration_s=900,
    )
    detections = sorted(made.detections, key=lambda d: d.received_at)
    pre_gate = ZoneEngine._could_be_located
    verdicts: list[bool] = []

    def checked(engine: ZoneEngine, pool: list, c: float) -> bool:
        verdict = pre_gate(engine, pool, c)
        seed = pool[0]
        enu = engine._enu_table(seed.pos_i)[[p.pos_i for p in pool]]
        times = np.array([(p.t_us - seed.t_us) / 1e6 for p in pool])
        codes = np.array([p.code for p in pool])
        inside = gate(enu, times, codes, 0, c, config)
        assert verdict == (len(set(codes[inside])) >= config.min_sensors - 1)
        verdicts.append(verdict)
        return verdict

    def run() -> tuple[list[IncidentRecord], int, int]:
        engine = ZoneEngine(detections[0].zone, config, placeholder_scorer)
        out: list[IncidentRecord] = []
        for offset, det in enumerate(detections):
            engine.add(det, offset, det.received_at)
            out.extend(engine.poll(det.received_at))
        out.extend(engine.flush())
        return out, engine.noise, engine.echoes

    monkeypatch.setattr(ZoneEngine, "_could_be_located", checked)
    gated, noise, echoes = run()
    assert verdicts.count(False) > 100 and verdicts.count(True) > 20  # both paths exercised
    monkeypatch.setattr(ZoneEngine, "_could_be_located", lambda self, pool, c: True)
    ungated, noise_ungated, echoes_ungated = run()
    assert len(gated) >= 5 and echoes > 0
    assert gated == ungated and (noise, echoes) == (noise_ungated, echoes_ungated)
