"""Synthetic-city benchmark of the whole locator (association, solver, incidents, scoring).

A simulated array (``services/locator/simulate.py``: default 12 sensors per square mile over
2 square miles around downtown Pittsburgh) hears an hour-like stream of gunfire (single shots
and bursts), fireworks, other impulsive sources, single-sensor noise, echoes, diffracted
arrivals and one sensor with a bad clock. The detections are replayed in the order ingest
would receive them (``received_at``, with ``now`` = that instant) through the same
:class:`ZoneEngine` the service runs, scored by the packaged scoring model, then flushed.

Figures (the last printed line is one JSON object):

* ``detection_rate``: share of truth gunfire events with an incident round within ``MATCH_M``
  (25 m) of the shooter, during the event (±1 s);
* ``false_per_sensor_hour``: incidents none of whose rounds is within ``PHANTOM_M`` (50 m) of
  any truth source (gunfire, fireworks or other) active then, per sensor-hour;
* ``false_alerts_per_sensor_hour``: incidents ending as gunfire/probable_gunfire that match no
  truth gunfire event, per sensor-hour;
* ``fireworks_as_gunfire``: of the fireworks events that produced an incident, the share whose
  incident ended as ``gunfire`` (``fireworks_as_gunfire_or_probable`` also counts probable);
* ``gunfire_called_gunfire``: of the detected gunfire events, share ending gunfire/probable;
* ``rounds_exact``: of the detected gunfire events, share matched by exactly one incident whose
  round count is the rounds fired;
* ``median_error_m``: horizontal error of each located truth round (incident round within
  50 ms and 100 m); ``median_crb_m``: sqrt(trace) of the 2-D Cramér–Rao bound for the same
  round — TDOA Fisher information J = Hᵀ H / σ², H the Jacobian of arrival times wrt
  (x, y, t0) over the sensors whose direct arrival was reported (bad-clock sensors excluded),
  σ the simulated timing noise; ``error_to_crb``: median of per-round error / bound.

``--effects`` adds what real arrays do (``simulate.REAL_ARRAY_EFFECTS``: duplicate reports,
later rounds at lower SNR, a shadowed part of the array); ``--dense`` adds ``dense_curve``:
the detection rate of gunfire events at 0.5-6 shots per second in one zone, 60 s each.

Usage: ``python bench/synthetic.py [--hours 2] [--seed 1] [--density 12] [--features full]
[--effects] [--dense]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.locator.config import LocatorConfig
from services.locator.engine import ZoneEngine
from services.locator.scoring import packaged_model
from services.locator.simulate import (
    REAL_ARRAY_EFFECTS,
    Scenario,
    build_array,
    mixed_traffic,
)
from shared.geo import LocalFrame, speed_of_sound
from shared.schemas import IncidentRecord

MATCH_M = 25.0
PHANTOM_M = 50.0
START = datetime(2026, 7, 4, 21, 0, 0, tzinfo=UTC)


def replay(sc: Scenario, zone: str) -> list[IncidentRecord]:
    """Every incident version the engine publishes, feeding detections as ingest would."""
    engine = ZoneEngine(zone, LocatorConfig(), packaged_model())
    out: list[IncidentRecord] = []
    order = sorted(range(len(sc.detections)), key=lambda i: sc.detections[i].received_at)
    for offset, i in enumerate(order):
        det = sc.detections[i]
        engine.add(det, offset, det.received_at)
        out.extend(engine.poll(det.received_at))
    out.extend(engine.flush())
    return out


def latest(records: Sequence[IncidentRecord]) -> list[IncidentRecord]:
    last: dict[str, IncidentRecord] = {}
    for r in records:
        if r.incident_id not in last or r.version > last[r.incident_id].version:
            last[r.incident_id] = r
    return [r for r in last.values() if r.event != "cancelled"]


def crb_xy_m(sensors: np.ndarray, source: np.ndarray, c: float, sigma_s: float) -> float:
    """sqrt(trace) of the (x, y) block of the CRB of (x, y, t0) from arrival times."""
    diff = source[None, :] - sensors
    d = np.linalg.norm(diff, axis=1)
    h = np.column_stack([diff[:, 0] / (c * d), diff[:, 1] / (c * d), np.ones(len(d))])
    fisher = h.T @ h / sigma_s**2
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return float("inf")
    return float(np.sqrt(max(cov[0, 0] + cov[1, 1], 0.0)))


def evaluate(sc: Scenario, incidents: Sequence[IncidentRecord], hours: float) -> dict:
    frame = LocalFrame(*sc.array.center)
    c = speed_of_sound(sc.temperature_c)
    enu = {s.sensor_id: p for s, p in zip(sc.array.sensors, sc.array.enu(), strict=True)}
    rounds = [  # (incident, round, east-north)
        (inc, r, frame.to_enu(r.lat, r.lon)[:2]) for inc in incidents for r in inc.round_details
    ]
    src = {e.event_id: frame.to_enu(e.lat, e.lon, e.alt_m) for e in sc.truth}
    one_s = timedelta(seconds=1)

    def near(ev_id: str, radius: float) -> list[IncidentRecord]:
        ev = next(e for e in sc.truth if e.event_id == ev_id)
        hits = {}
        for inc, r, xy in rounds:
            if (
                ev.times[0] - one_s <= r.shot_time <= ev.times[-1] + one_s
                and np.linalg.norm(xy - src[ev_id][:2]) <= radius
            ):
                hits[inc.incident_id] = inc
        return list(hits.values())

    gun = [e for e in sc.truth if e.kind == "gunfire"]
    fw = [e for e in sc.truth if e.kind == "fireworks"]
    gun_hits = {e.event_id: near(e.event_id, MATCH_M) for e in gun}
    detected = [e for e in gun if gun_hits[e.event_id]]
    called = [
        e
        for e in detected
        if any(i.classification in ("gunfire", "probable_gunfire") for i in gun_hits[e.event_id])
    ]
    matched_gun_incidents = {i.incident_id for hits in gun_hits.values() for i in hits}
    exact = [
        e for e in detected
        if len(gun_hits[e.event_id]) == 1 and gun_hits[e.event_id][0].rounds == len(e.times)
    ]

    # phantom: no round near any truth source active at that time
    phantoms = 0
    for inc in incidents:
        real = False
        for r in inc.round_details:
            xy = frame.to_enu(r.lat, r.lon)[:2]
            for e in sc.truth:
                if (
                    e.times[0] - one_s <= r.shot_time <= e.times[-1] + one_s
                    and np.linalg.norm(xy - src[e.event_id][:2]) <= PHANTOM_M
                ):
                    real = True
                    break
            if real:
                break
        phantoms += not real
    false_alerts = sum(
        1
        for i in incidents
        if i.classification in ("gunfire", "probable_gunfire")
        and i.incident_id not in matched_gun_incidents
    )
    fw_hits = {e.event_id: near(e.event_id, PHANTOM_M) for e in fw}
    fw_seen = [hits for hits in fw_hits.values() if hits]
    fw_gun = sum(any(i.classification == "gunfire" for i in h) for h in fw_seen)
    fw_gun_prob = sum(
        any(i.classification in ("gunfire", "probable_gunfire") for i in h) for h in fw_seen
    )

    # per-round location error against the CRB
    heard: dict[tuple[str, int], list[str]] = {}
    for det, t in zip(sc.detections, sc.pulse_truth, strict=True):
        if t.path == "direct" and det.sensor_id not in sc.bad_clock_sensors:
            heard.setdefault((t.event_id, t.round_index), []).append(det.sensor_id)
    errors, bounds, ratios = [], [], []
    for e in gun:
        for k, t_emit in enumerate(e.times):
            best = None
            for _, r, xy in rounds:
                if abs((r.shot_time - t_emit).total_seconds()) <= 0.05:
                    err = float(np.linalg.norm(xy - src[e.event_id][:2]))
                    if err <= 100.0 and (best is None or err < best):
                        best = err
            ids = sorted(set(heard.get((e.event_id, k), [])))  # (a duplicate report: once)
            if best is None or len(ids) < 3:
                continue
            bound = crb_xy_m(np.array([enu[s] for s in ids]), src[e.event_id], c, sc.timing_noise_s)
            errors.append(best)
            bounds.append(bound)
            ratios.append(best / bound)
    n_sensors = len(sc.array.sensors)

    def med(v: list[float]) -> float | None:
        return round(float(np.median(v)), 4) if v else None

    return {
        "gunfire_events": len(gun),
        "gunfire_rounds": sum(len(e.times) for e in gun),
        "fireworks_events": len(fw),
        "incidents": len(incidents),
        "detection_rate": round(len(detected) / len(gun), 4) if gun else None,
        "gunfire_called_gunfire": round(len(called) / len(detected), 4) if detected else None,
        "rounds_exact": round(len(exact) / len(detected), 4) if detected else None,
        "false_per_sensor_hour": round(phantoms / (n_sensors * hours), 5),
        "false_alerts_per_sensor_hour": round(false_alerts / (n_sensors * hours), 5),
        "fireworks_as_gunfire": round(fw_gun / len(fw_seen), 4) if fw_seen else None,
        "fireworks_as_gunfire_or_probable": (
            round(fw_gun_prob / len(fw_seen), 4) if fw_seen else None
        ),
        "rounds_located": len(errors),
        "median_error_m": med(errors),
        "p90_error_m": round(float(np.percentile(errors, 90)), 4) if errors else None,
        "median_crb_m": med(bounds),
        "error_to_crb": med(ratios),
    }


#: Shots per second in one zone for the dense-traffic curve (a shootout across a block, a
#: fireworks show: 2.5-6 /s), each for ``DENSE_SECONDS``.
DENSE_RATES = (0.5, 1.0, 2.0, 2.5, 4.0, 6.0)
DENSE_SECONDS = 60.0


def dense_curve(array, seed: int, effects: bool) -> list[dict]:
    """Detection rate of gunfire events (and rounds exact share) against shots per second."""
    out = []
    for rate in DENSE_RATES:
        sc = mixed_traffic(
            array, start=START, duration_s=DENSE_SECONDS, shots_per_hour=rate * 3600,
            fireworks_per_hour=0.0, noise_per_sensor_hour=60.0,
            rng=np.random.default_rng(seed + int(rate * 10)), other_per_hour=0.0,
            effects=REAL_ARRAY_EFFECTS if effects else None,
        )
        figures = evaluate(sc, latest(replay(sc, array.sensors[0].zone)), DENSE_SECONDS / 3600)
        row = {"shots_per_s": rate, "detection_rate": figures["detection_rate"],
               "gunfire_events": figures["gunfire_events"]}
        print(f"dense {rate}/s: {json.dumps(row)}")
        out.append(row)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--density", type=float, default=12.0, help="sensors per square mile")
    ap.add_argument("--area", type=float, default=2.0, help="square miles")
    ap.add_argument("--timing-noise", type=float, default=1e-4, help="seconds (1 sigma)")
    ap.add_argument("--shots-per-hour", type=float, default=30.0)
    ap.add_argument("--fireworks-per-hour", type=float, default=20.0)
    ap.add_argument("--noise-per-sensor-hour", type=float, default=60.0)
    ap.add_argument("--features", choices=["full", "level_only", "none"], default="full")
    ap.add_argument(
        "--effects", action="store_true",
        help="real-array effects: duplicate reports, later rounds at lower SNR, a shadowed "
        "part of the array (simulate.REAL_ARRAY_EFFECTS)",
    )
    ap.add_argument(
        "--dense", action="store_true",
        help="also measure the dense-traffic curve (detection vs shots/s in one zone)",
    )
    args = ap.parse_args(argv)
    array = build_array(density_per_sq_mi=args.density, area_sq_mi=args.area, seed=args.seed)
    sc = mixed_traffic(
        array,
        start=START,
        duration_s=args.hours * 3600,
        shots_per_hour=args.shots_per_hour,
        fireworks_per_hour=args.fireworks_per_hour,
        noise_per_sensor_hour=args.noise_per_sensor_hour,
        rng=np.random.default_rng(args.seed),
        timing_noise_s=args.timing_noise,
        bad_clock_sensors=1,
        feature_mode=args.features,
        effects=REAL_ARRAY_EFFECTS if args.effects else None,
    )
    t0 = time.perf_counter()
    records = replay(sc, array.sensors[0].zone)
    elapsed = time.perf_counter() - t0
    figures = evaluate(sc, latest(records), args.hours)
    figures["detections"] = len(sc.detections)
    figures["replay_s"] = round(elapsed, 2)
    figures["engine_dps"] = round(len(sc.detections) / elapsed, 1)  # detections/s, one core
    if args.dense:
        figures["dense_curve"] = dense_curve(array, args.seed, args.effects)
    print(
        f"{len(array.sensors)} sensors, {args.hours} h, {len(sc.detections)} detections "
        f"replayed in {elapsed:.1f} s: detected {figures['detection_rate']} of "
        f"{figures['gunfire_events']} gunfire events, {figures['incidents']} incidents, "
        f"median error {figures['median_error_m']} m vs CRB {figures['median_crb_m']} m"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
