"""A synthetic city: a sensor array and the detections it would report, with ground truth.

Pure: all randomness comes from the ``numpy.random.Generator`` passed in (same seed, same
output), there is no I/O and no wall clock (``start`` is an argument). Returns frozen
dataclasses holding :class:`shared.schemas.DetectionRecord` values, so the output can be fed
to the locator engine, posted to ingest (:func:`to_detection_in`) or scored against truth.

What is modelled (every number is a modelling assumption, see docs/scoring.md):

* **Array.** ``density_per_sq_mi`` x ``area_sq_mi`` sensors on a jittered square grid around a
  real place (default: downtown Pittsburgh), on rooftops 8–40 m above a flat ground.
* **Propagation.** Straight rays at the speed of sound of ``temperature_c``; received level
  = effective source level - spherical spreading (20·log10 d) - excess attenuation
  (``EXCESS_DB_PER_KM``) - building shadowing (random per sensor and event) + scatter; the
  reported level saturates at ``SENSOR_CLIP_DB`` (the Pittsburgh 2018 array never reported
  more than 95.5 dB). A sensor hears a pulse when its SNR over its noise floor is at least
  ``MIN_SNR_DB`` and it is within ``MAX_RANGE_M``, unless it randomly misses it.
* **Features.** Rise time, duration and spectral centroid drawn per source kind (gunfire:
  measured on the kit's real clips, :data:`PULSE_SHAPES`) and smeared
  with distance (absorption lengthens the onset and removes high frequencies).
* **Dirt.** Bursts, simultaneous shooters, fireworks strings, echoes (extra, weaker, later
  pulses at the same sensor), diffracted arrivals (the direct path is blocked: the first
  arrival is late), single-sensor noise pulses, and sensors whose clock is off.

Timing: ``arrival = emission + distance / c + N(0, timing_noise_s)``, then rounded to the
microsecond (the wire resolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from shared.geo import LocalFrame, speed_of_sound
from shared.schemas import AcousticFeatures, DetectionRecord, Position, format_time

MILE_M = 1609.344
#: Excess attenuation beyond spherical spreading (air absorption of the high end of an
#: impulse plus ground and building effects), dB per km. Tuned with the source levels below so
#: that simulated received levels resemble the Pittsburgh 2018 array's (median ~86 dB SPL at a
#: median range of ~500 m).
EXCESS_DB_PER_KM = 10.0
#: Reported level saturates here (max power_dB_SPL in the Pittsburgh 2018 data is 95.5 dB).
SENSOR_CLIP_DB = 96.0
#: Median sensor noise floor, dB SPL (Pittsburgh: level - SNR is ~60-70 dB).
NOISE_FLOOR_DB = 62.0
#: Detection threshold over the noise floor (the Pittsburgh data's smallest SNR is 2 dB).
MIN_SNR_DB = 3.0
#: Nobody hears anything beyond this (m).
MAX_RANGE_M = 2000.0
#: Probability that a sensor in range misses a pulse anyway (wind, busy, occluded).
MISS_PROB = 0.05

EventKind = Literal["gunfire", "fireworks", "other", "noise"]
PathKind = Literal["direct", "echo", "diffracted", "noise"]
FeatureMode = Literal["full", "level_only", "none"]

SCENARIO_KINDS: tuple[str, ...] = (
    "shot",
    "burst",
    "two_shooters",
    "fireworks",
    "echoes",
    "diffraction",
    "noise",
    "bad_clock",
    "mixed",
)


@dataclass(frozen=True)
class SourceModel:
    """Per-kind source statistics (medians and log-normal spreads; levels in dB)."""

    level_db: float  # effective source level at 1 m, as the sensors' level measure reads it
    level_sd_db: float
    rise_ms: float
    duration_ms: float
    centroid_hz: float
    spread: float  # (unused by the pulse shape: see PULSE_SHAPES)
    height_m: tuple[float, float]  # source height above ground, uniform range


#: Gunfire: muzzle blast, very short rise, an N-wave under 2 ms, energy mostly 0.3–0.8 kHz
#: as a 12 kHz street sensor hears it (measured, see PULSE_SHAPES).
#: Fireworks: longer, bassier reports, somewhat quieter, some above street level.
#: Other: impulsive urban noise (construction, dumpsters, doors): slow, long, quieter.
SOURCES: dict[str, SourceModel] = {
    # rise, duration, centroid at 1 m: measured on the kit's real clips (PULSE_SHAPES)
    "gunfire": SourceModel(148.0, 5.0, 0.21, 1.7, 530.0, 0.34, (1.0, 2.0)),
    "fireworks": SourceModel(141.0, 6.0, 1.5, 15.0, 400.0, 0.45, (0.5, 40.0)),
    "other": SourceModel(128.0, 6.0, 4.0, 60.0, 700.0, 0.6, (0.5, 10.0)),
}


@dataclass(frozen=True)
class SimSensor:
    sensor_id: str
    zone: str
    lat: float
    lon: float
    alt_m: float


@dataclass(frozen=True)
class CityArray:
    """A deployed array: sensors around ``center`` covering ``area_sq_mi``."""

    sensors: tuple[SimSensor, ...]
    center: tuple[float, float]
    area_sq_mi: float
    ground_alt_m: float = 200.0

    @property
    def frame(self) -> LocalFrame:
        """The local ENU frame of the simulation (origin at ``center``, ellipsoid height 0)."""
        return LocalFrame(self.center[0], self.center[1], 0.0)

    @property
    def half_side_m(self) -> float:
        return float(np.sqrt(self.area_sq_mi) * MILE_M / 2)

    def enu(self) -> NDArray[np.float64]:
        """Sensor positions in :attr:`frame`, shape (n, 3)."""
        return self.frame.to_enu(
            [s.lat for s in self.sensors],
            [s.lon for s in self.sensors],
            [s.alt_m for s in self.sensors],
        ).reshape(-1, 3)


def build_array(
    *,
    density_per_sq_mi: float = 12,
    area_sq_mi: float = 2.0,
    center: tuple[float, float] = (40.4406, -79.9959),
    zone: str = "pgh-downtown",
    seed: int = 0,
    ground_alt_m: float = 200.0,
) -> CityArray:
    """A jittered square grid of rooftop sensors. Raises ValueError on non-positive sizes."""
    if density_per_sq_mi <= 0 or area_sq_mi <= 0:
        raise ValueError("density_per_sq_mi and area_sq_mi must be positive")
    rng = np.random.default_rng(seed)
    n = max(3, round(density_per_sq_mi * area_sq_mi))
    side = np.sqrt(area_sq_mi) * MILE_M
    per_row = int(np.ceil(np.sqrt(n)))
    spacing = side / per_row
    cells = rng.permutation(per_row * per_row)[:n]
    gx, gy = cells % per_row, cells // per_row
    # jitter within +-35 % of the spacing: a real deployment follows available rooftops
    x = (gx + 0.5) * spacing - side / 2 + rng.uniform(-0.35, 0.35, n) * spacing
    y = (gy + 0.5) * spacing - side / 2 + rng.uniform(-0.35, 0.35, n) * spacing
    z = ground_alt_m + rng.uniform(8.0, 40.0, n)
    frame = LocalFrame(center[0], center[1], 0.0)
    lat, lon, alt = frame.to_geodetic(np.stack([x, y, z], axis=-1))
    sensors = tuple(
        SimSensor(f"sim-{zone}-{i:03d}", zone, float(lat[i]), float(lon[i]), float(alt[i]))
        for i in range(n)
    )
    return CityArray(sensors, (float(center[0]), float(center[1])), float(area_sq_mi), ground_alt_m)


@dataclass(frozen=True)
class TruthEvent:
    """One source: where it was and when each round/pop was emitted."""

    event_id: str
    kind: EventKind
    lat: float
    lon: float
    alt_m: float
    times: tuple[datetime, ...]


@dataclass(frozen=True)
class PulseTruth:
    """Where a detection came from (aligned with :attr:`Scenario.detections`)."""

    event_id: str | None  # None for noise pulses
    round_index: int
    path: PathKind
    true_arrival: datetime  # before any clock error of the sensor
    distance_m: float | None  # straight-line source-sensor distance (None for noise)


@dataclass(frozen=True)
class Scenario:
    array: CityArray
    detections: tuple[DetectionRecord, ...]  # sorted by arrival_time
    truth: tuple[TruthEvent, ...]
    pulse_truth: tuple[PulseTruth, ...] = ()
    temperature_c: float = 10.0
    timing_noise_s: float = 1e-4
    bad_clock_sensors: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeardPulse:
    """One pulse as one sensor reports it (before it becomes a DetectionRecord)."""

    sensor: int  # index into the array
    t_s: float  # reported arrival, seconds after the scenario start
    true_t_s: float
    distance_m: float
    peak_db: float | None
    snr_db: float | None
    rise_time_ms: float | None
    duration_ms: float | None
    spectral_centroid_hz: float | None
    path: PathKind
    event_id: str | None = None
    round_index: int = 0


@dataclass(frozen=True)
class ArrayEffects:
    """What real arrays do that the plain model leaves out (issue 21); all off by default,
    and with none of them the random draws are exactly those of the plain model.

    * ``duplicate_prob``: a sensor reports a pulse twice, the copy 0-1 ms later under a new
      detection id and 0-1 dB apart (a resend after a lost response, a firmware re-trigger).
    * ``reverb_db``: round k >= 1 of a burst arrives at the same level over a noise floor
      raised by the earlier rounds' reverberation: its SNR falls by ``reverb_db`` per earlier
      round (at most three), so fewer sensors hear the later rounds.
    * ``shadow_share`` / ``shadow_db``: a share of the array, one side of it as seen from the
      source (a hill, a block of tall buildings), is ``shadow_db`` quieter for every round.
    Gunfire rounds are always ordered and at least one firearm cycle apart
    (``gunfire_times``: gaps of 50 ms and more, above ``rules.MIN_ROUND_INTERVAL_S``).
    """

    duplicate_prob: float = 0.0
    reverb_db: float = 0.0
    shadow_share: float = 0.0
    shadow_db: float = 15.0


#: The effects ``bench/synthetic.py --effects`` turns on.
REAL_ARRAY_EFFECTS = ArrayEffects(duplicate_prob=0.05, reverb_db=4.0, shadow_share=0.3)


def _shadowed(w: _World, src: NDArray) -> NDArray[np.bool_]:
    """Sensors on one side of the source (a random bearing), ``shadow_share`` of the array."""
    eff = w.effects
    assert eff is not None
    bearing = w.rng.uniform(0.0, 2 * np.pi)
    rel = w.enu[:, :2] - src[:2]
    along = rel @ np.array([np.cos(bearing), np.sin(bearing)])
    cut = np.quantile(along, 1.0 - eff.shadow_share) if len(along) else 0.0
    return along > cut


def _with_duplicates(w: _World, pulses: list[HeardPulse]) -> list[HeardPulse]:
    """``pulses`` plus, for a share of them, a second report of the same onset."""
    eff = w.effects
    assert eff is not None
    out: list[HeardPulse] = []
    for p in pulses:
        out.append(p)
        if p.path != "echo" and w.rng.random() < eff.duplicate_prob:
            lag = float(w.rng.uniform(0.0, 0.001))
            shift = float(w.rng.uniform(-1.0, 1.0))
            out.append(replace(
                p, t_s=p.t_s + lag, true_t_s=p.true_t_s + lag,
                peak_db=None if p.peak_db is None else min(p.peak_db + shift, SENSOR_CLIP_DB),
                snr_db=None if p.snr_db is None else p.snr_db + shift,
            ))
    return out


@dataclass
class _World:
    """Mutable per-scenario state: the array in ENU plus per-sensor properties."""

    array: CityArray
    rng: np.random.Generator
    enu: NDArray[np.float64]
    noise_floor: NDArray[np.float64]
    temp_bias: NDArray[np.float64]
    clock_offset: NDArray[np.float64]
    c: float
    timing_noise_s: float
    feature_mode: FeatureMode
    echo_prob: float = 0.0
    diffraction_prob: float = 0.0
    effects: ArrayEffects | None = None
    pulses: list[HeardPulse] = field(default_factory=list)
    truth: list[TruthEvent] = field(default_factory=list)


def _world(
    array: CityArray,
    rng: np.random.Generator,
    *,
    temperature_c: float,
    timing_noise_s: float,
    feature_mode: FeatureMode,
    echo_prob: float = 0.0,
    diffraction_prob: float = 0.0,
) -> _World:
    n = len(array.sensors)
    return _World(
        array=array,
        rng=rng,
        enu=array.enu(),
        noise_floor=NOISE_FLOOR_DB + rng.normal(0.0, 3.0, n),
        temp_bias=rng.normal(0.0, 0.5, n),
        clock_offset=np.zeros(n),
        c=speed_of_sound(temperature_c),
        timing_noise_s=timing_noise_s,
        feature_mode=feature_mode,
        echo_prob=echo_prob,
        diffraction_prob=diffraction_prob,
    )


def _features(
    w: _World, base: NDArray, d: NDArray, level: NDArray, snr: NDArray, kind: str = "gunfire"
) -> list[tuple[float | None, ...]]:
    """(peak, snr, rise, duration, centroid) per heard sensor, per the world's feature mode."""
    k = len(d)
    if w.feature_mode == "none":
        return [(None,) * 5] * k
    peak = np.minimum(level, SENSOR_CLIP_DB)
    if w.feature_mode == "level_only":
        return [(float(p), float(s), None, None, None) for p, s in zip(peak, snr, strict=True)]
    rise, dur, cen = pulse_shape_at_sensors(w.rng, kind, base, d)
    return [
        (float(p), float(s), float(r), float(u), float(c))
        for p, s, r, u, c in zip(peak, snr, rise, dur, cen, strict=True)
    ]


@dataclass(frozen=True)
class PulseShapeModel:
    """How a kind's pulse shape reads at a sensor, in the sensor's own definitions
    (services/sensor/features.py, docs/sensor.md): log-normal spreads per event (the source)
    and per sensor (the path), and the range over which each feature doubles (rise,
    duration) or halves (centroid); ``inf`` = no trend with distance."""

    event_sigma: tuple[float, float, float]  # rise, duration, centroid (natural log)
    sensor_sigma: tuple[float, float, float]
    range_m: tuple[float, float, float]


#: Gunfire: MEASURED on the kit's real clips, FP1–FP3 (472 pulses the vendor used for
#: location, 45–445 m; ``python bench/sensor.py`` prints the distributions, FP4–FP5 held
#: out): rise median 0.25 ms growing about x2 per km, duration 1.7 ms and centroid 530 Hz
#: with no trend over that range; residual log sd 0.48, 0.24, 0.26, split evenly between
#: the event and the sensor. Fireworks and other: ASSUMPTIONS (no real recordings of them;
#: the scoring model holds these features neutral for that reason, docs/scoring.md).
PULSE_SHAPES: dict[str, PulseShapeModel] = {
    "gunfire": PulseShapeModel((0.34, 0.17, 0.18), (0.34, 0.17, 0.18),
                               (1000.0, float("inf"), float("inf"))),
    "fireworks": PulseShapeModel((0.45, 0.45, 0.45), (0.2, 0.2, 0.2), (400.0, 800.0, 1000.0)),
    "other": PulseShapeModel((0.6, 0.6, 0.6), (0.2, 0.2, 0.2), (400.0, 800.0, 1000.0)),
}


def pulse_shape_of_event(rng: np.random.Generator, kind: str) -> NDArray:
    """One event's (rise_ms, duration_ms, centroid_hz) at 1 m: the kind's medians with the
    event's log-normal spread."""
    model, shape = SOURCES[kind], PULSE_SHAPES[kind]
    medians = np.array([model.rise_ms, model.duration_ms, model.centroid_hz])
    return medians * np.exp(rng.normal(0.0, 1.0, 3) * np.array(shape.event_sigma))


def pulse_shape_at_sensors(
    rng: np.random.Generator, kind: str, base: NDArray, d: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """Rise, duration and centroid at sensors ``d`` metres away, from the event's ``base``."""
    shape = PULSE_SHAPES[kind]
    jit = np.exp(rng.normal(0.0, 1.0, (3, len(d))) * np.array(shape.sensor_sigma)[:, None])
    l_rise, l_dur, l_cen = shape.range_m
    rise = base[0] * (1 + d / l_rise) * jit[0]
    dur = base[1] * (1 + d / l_dur) * jit[1]
    cen = base[2] / (1 + d / l_cen) * jit[2]
    return rise, dur, cen


def _emit(
    w: _World,
    kind: str,
    event_id: str,
    src: NDArray,
    times_s: list[float],
    *,
    level_db: float | None = None,
) -> list[HeardPulse]:
    """Every pulse the array reports for one source emitting at ``times_s``."""
    rng, model = w.rng, SOURCES[kind]
    src_level = rng.normal(model.level_db, model.level_sd_db) if level_db is None else level_db
    base = pulse_shape_of_event(rng, kind)
    n = len(w.enu)
    d = np.linalg.norm(w.enu - src, axis=1)
    # buildings: the farther the sensor, the likelier the direct path is blocked
    blocked = rng.random(n) < np.minimum(0.6, d / 1500.0)
    shadow = np.where(blocked, rng.uniform(5.0, 20.0, n), 0.0)
    diffracted = blocked & (rng.random(n) < w.diffraction_prob)
    late_s = np.where(diffracted, rng.uniform(0.003, 0.04, n), 0.0)
    eff = w.effects
    if eff is not None and eff.shadow_share > 0:
        shadow = shadow + np.where(_shadowed(w, src), eff.shadow_db, 0.0)
    out: list[HeardPulse] = []
    for r, t0 in enumerate(times_s):
        level = (
            src_level
            - 20 * np.log10(np.maximum(d, 1.0))
            - EXCESS_DB_PER_KM * d / 1000.0
            - shadow
            + rng.normal(0.0, 1.5, n)
        )
        snr = level - w.noise_floor
        if eff is not None and eff.reverb_db > 0:
            snr = snr - eff.reverb_db * min(r, 3)
        heard = (snr >= MIN_SNR_DB) & (d <= MAX_RANGE_M) & (rng.random(n) >= MISS_PROB)
        idx = np.flatnonzero(heard)
        true_t = t0 + d[idx] / w.c + late_s[idx] + rng.normal(0, w.timing_noise_s, len(idx))
        feats = _features(w, base, d[idx], level[idx], snr[idx], kind)
        for j, i in enumerate(idx):
            path: PathKind = "diffracted" if diffracted[i] else "direct"
            out.append(
                HeardPulse(
                    int(i), float(true_t[j] + w.clock_offset[i]), float(true_t[j]), float(d[i]),
                    *feats[j], path=path, event_id=event_id, round_index=r,
                )
            )
            if rng.random() < w.echo_prob:
                out.extend(_echoes(w, out[-1], level[i]))
    if eff is not None and eff.duplicate_prob > 0:
        out = _with_duplicates(w, out)
    return out


def _echoes(w: _World, direct: HeardPulse, level: float) -> list[HeardPulse]:
    """1–3 reflections off buildings: later, weaker, slower onset."""
    rng, out = w.rng, []
    for _ in range(int(rng.integers(1, 4))):
        delay = rng.uniform(0.02, 0.4)
        lvl = level - rng.uniform(6.0, 18.0)
        snr = lvl - w.noise_floor[direct.sensor]
        if snr < MIN_SNR_DB:
            continue
        has = direct.peak_db is not None
        full = direct.rise_time_ms is not None
        out.append(
            HeardPulse(
                direct.sensor, direct.t_s + delay, direct.true_t_s + delay, direct.distance_m,
                float(min(lvl, SENSOR_CLIP_DB)) if has else None,
                float(snr) if has else None,
                direct.rise_time_ms * rng.uniform(1.5, 4.0) if full else None,
                direct.duration_ms * rng.uniform(1.2, 3.0) if full else None,
                direct.spectral_centroid_hz * rng.uniform(0.5, 0.9) if full else None,
                path="echo", event_id=direct.event_id, round_index=direct.round_index,
            )
        )
    return out


def _noise(w: _World, t_from: float, t_to: float, per_sensor_hour: float) -> None:
    """Single-sensor impulsive noise (doors, traffic, construction) as a Poisson process."""
    rng = w.rng
    for i in range(len(w.enu)):
        k = rng.poisson(per_sensor_hour * (t_to - t_from) / 3600.0)
        for t in rng.uniform(t_from, t_to, k):
            snr = float(rng.uniform(MIN_SNR_DB, 25.0))
            lvl = w.noise_floor[i] + snr
            feats: tuple[float | None, ...]
            if w.feature_mode == "none":
                feats = (None,) * 5
            elif w.feature_mode == "level_only":
                feats = (float(min(lvl, SENSOR_CLIP_DB)), snr, None, None, None)
            else:
                feats = (
                    float(min(lvl, SENSOR_CLIP_DB)), snr,
                    float(np.exp(rng.uniform(np.log(0.5), np.log(30.0)))),
                    float(np.exp(rng.uniform(np.log(3.0), np.log(300.0)))),
                    float(np.exp(rng.uniform(np.log(100.0), np.log(4000.0)))),
                )
            w.pulses.append(
                HeardPulse(i, float(t), float(t), float("nan"), *feats, path="noise")
            )


def _source_xyz(w: _World, kind: str, inner: float = 0.8) -> NDArray:
    h = w.array.half_side_m * inner
    lo, hi = SOURCES[kind].height_m
    x, y = w.rng.uniform(-h, h, 2)
    return np.array([x, y, w.array.ground_alt_m + w.rng.uniform(lo, hi)])


def gunfire_times(rng: np.random.Generator, t0: float, rounds: int) -> list[float]:
    """Round times of one shooter: a steady cadence (0.1–1 s, sometimes 1–3 s), CV ~0.15."""
    period = rng.uniform(0.1, 1.0) if rng.random() < 0.75 else rng.uniform(1.0, 3.0)
    gaps = period * np.clip(rng.normal(1.0, 0.15, rounds - 1), 0.5, 1.6)
    return list(t0 + np.concatenate([[0.0], np.cumsum(gaps)]))


def fireworks_times(rng: np.random.Generator, t0: float) -> list[float]:
    """Pops of one fireworks source: a crackling string, or a few irregular big bangs."""
    if rng.random() < 0.6:
        n = int(rng.integers(5, 30))
        gaps = rng.exponential(rng.uniform(0.08, 0.4), n - 1) + 0.01
    else:
        n = int(rng.integers(1, 6))
        gaps = rng.exponential(rng.uniform(2.0, 10.0), n - 1) + 0.3
    return list(t0 + np.concatenate([[0.0], np.cumsum(gaps)]))


def _add_event(
    w: _World, kind: EventKind, times_s: list[float], start: datetime, *, src: NDArray | None = None
) -> TruthEvent:
    src = _source_xyz(w, kind) if src is None else src
    event_id = f"{kind}-{len(w.truth):04d}"
    w.pulses.extend(_emit(w, kind, event_id, src, times_s))
    lat, lon, alt = w.array.frame.to_geodetic(src)
    ev = TruthEvent(
        event_id, kind, float(lat), float(lon), float(alt),
        tuple(_at(start, t) for t in times_s),
    )
    w.truth.append(ev)
    return ev


def _at(start: datetime, t_s: float) -> datetime:
    return start + timedelta(microseconds=round(t_s * 1e6))


def _finish(w: _World, start: datetime, temperature_c: float) -> Scenario:
    rng = w.rng
    pulses = sorted(w.pulses, key=lambda p: (p.t_s, p.sensor))
    latency = rng.uniform(0.05, 0.5, len(pulses))
    dets, truth = [], []
    for k, p in enumerate(pulses):
        s = w.array.sensors[p.sensor]
        arrival = _at(start, p.t_s)
        dets.append(
            DetectionRecord(
                detection_id=f"d{k:07d}",
                sensor_id=s.sensor_id,
                zone=s.zone,
                arrival_time=arrival,
                position=Position(lat=s.lat, lon=s.lon, alt_m=s.alt_m),
                features=AcousticFeatures(
                    peak_db=p.peak_db,
                    snr_db=p.snr_db,
                    rise_time_ms=p.rise_time_ms,
                    duration_ms=p.duration_ms,
                    spectral_centroid_hz=p.spectral_centroid_hz,
                ),
                temperature_c=round(temperature_c + float(w.temp_bias[p.sensor]), 2),
                received_at=_at(start, p.true_t_s + float(latency[k])),
            )
        )
        truth.append(
            PulseTruth(
                p.event_id, p.round_index, p.path, _at(start, p.true_t_s),
                None if np.isnan(p.distance_m) else p.distance_m,
            )
        )
    bad = tuple(
        w.array.sensors[i].sensor_id for i in np.flatnonzero(w.clock_offset != 0.0)
    )
    return Scenario(
        array=w.array,
        detections=tuple(dets),
        truth=tuple(w.truth),
        pulse_truth=tuple(truth),
        temperature_c=temperature_c,
        timing_noise_s=w.timing_noise_s,
        bad_clock_sensors=bad,
    )


def _set_bad_clock(w: _World, count: int) -> None:
    for i in w.rng.choice(len(w.enu), size=min(count, len(w.enu)), replace=False):
        w.clock_offset[i] = w.rng.choice([-1.0, 1.0]) * w.rng.uniform(0.05, 0.3)


def scenario(
    kind: str,
    array: CityArray,
    *,
    start: datetime,
    rng: np.random.Generator,
    timing_noise_s: float = 1e-4,
    temperature_c: float = 10.0,
    duration_s: float = 600.0,
    feature_mode: FeatureMode = "full",
) -> Scenario:
    """One named situation (see :data:`SCENARIO_KINDS`). Raises ValueError on an unknown kind.

    ``duration_s`` only matters for ``"mixed"`` (the length of the stream); the other kinds
    last a few seconds. Events start 1 s after ``start``.
    """
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; expected one of {SCENARIO_KINDS}")
    if kind == "mixed":
        return mixed_traffic(
            array, start=start, duration_s=duration_s, shots_per_hour=30.0,
            fireworks_per_hour=6.0, noise_per_sensor_hour=60.0, rng=rng,
            timing_noise_s=timing_noise_s, temperature_c=temperature_c,
            echo_prob=0.1, diffraction_prob=0.1, bad_clock_sensors=1, feature_mode=feature_mode,
        )
    w = _world(
        array, rng, temperature_c=temperature_c, timing_noise_s=timing_noise_s,
        feature_mode=feature_mode,
        echo_prob=0.6 if kind == "echoes" else 0.0,
        diffraction_prob=0.5 if kind == "diffraction" else 0.0,
    )
    if kind == "bad_clock":
        _set_bad_clock(w, 1)
    if kind in ("shot", "noise"):
        _add_event(w, "gunfire", [1.0], start)
        if kind == "noise":
            _noise(w, 0.0, 5.0, 720.0)
    elif kind in ("burst", "echoes", "diffraction", "bad_clock"):
        _add_event(w, "gunfire", gunfire_times(rng, 1.0, int(rng.integers(3, 9))), start)
    elif kind == "two_shooters":
        a = _add_event(w, "gunfire", gunfire_times(rng, 1.0, int(rng.integers(3, 7))), start)
        src_a = w.array.frame.to_enu(a.lat, a.lon, a.alt_m)
        # second shooter 300-900 m away, starting within half a second of the first
        ang, dist = rng.uniform(0, 2 * np.pi), rng.uniform(300.0, 900.0)
        src_b = src_a + np.array([dist * np.cos(ang), dist * np.sin(ang), 0.0])
        t_b = 1.0 + rng.uniform(0.0, 0.5)
        _add_event(w, "gunfire", gunfire_times(rng, t_b, int(rng.integers(3, 7))), start, src=src_b)
    elif kind == "fireworks":
        _add_event(w, "fireworks", fireworks_times(rng, 1.0), start)
    return _finish(w, start, temperature_c)


def mixed_traffic(
    array: CityArray,
    *,
    start: datetime,
    duration_s: float,
    shots_per_hour: float,
    fireworks_per_hour: float,
    noise_per_sensor_hour: float,
    rng: np.random.Generator,
    other_per_hour: float = 2.0,
    timing_noise_s: float = 1e-4,
    temperature_c: float = 10.0,
    echo_prob: float = 0.1,
    diffraction_prob: float = 0.1,
    bad_clock_sensors: int = 0,
    feature_mode: FeatureMode = "full",
    effects: ArrayEffects | None = None,
) -> Scenario:
    """A long stream: Poisson gunfire incidents (40 % single shots, else bursts of 2–8),
    fireworks, other impulsive sources and per-sensor noise, with echoes, diffraction and
    optionally sensors with a bad clock and the ``effects`` of real arrays. Raises ValueError
    on a non-positive duration."""
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    w = _world(
        array, rng, temperature_c=temperature_c, timing_noise_s=timing_noise_s,
        feature_mode=feature_mode, echo_prob=echo_prob, diffraction_prob=diffraction_prob,
    )
    w.effects = effects
    _set_bad_clock(w, bad_clock_sensors)
    hours = duration_s / 3600.0
    for t in np.sort(rng.uniform(0, duration_s, rng.poisson(shots_per_hour * hours))):
        rounds = 1 if rng.random() < 0.4 else int(rng.integers(2, 9))
        _add_event(w, "gunfire", gunfire_times(rng, float(t), rounds), start)
    for t in np.sort(rng.uniform(0, duration_s, rng.poisson(fireworks_per_hour * hours))):
        _add_event(w, "fireworks", fireworks_times(rng, float(t)), start)
    for t in np.sort(rng.uniform(0, duration_s, rng.poisson(other_per_hour * hours))):
        _add_event(w, "other", [float(t)], start)
    _noise(w, 0.0, duration_s, noise_per_sensor_hour)
    return _finish(w, start, temperature_c)


def event_pulses(
    kind: Literal["gunfire", "fireworks", "other"],
    array: CityArray,
    rng: np.random.Generator,
    *,
    times_s: list[float] | None = None,
    feature_mode: FeatureMode = "full",
) -> list[HeardPulse]:
    """Direct pulses of one event at a random place (no echoes/diffraction), for training.

    Cheaper than :func:`scenario` (no DetectionRecord built); used by ``fit`` to make
    simulator-labelled incidents. ``times_s`` defaults to a single emission at 0.
    """
    w = _world(array, rng, temperature_c=10.0, timing_noise_s=1e-4, feature_mode=feature_mode)
    return _emit(w, kind, kind, _source_xyz(w, kind), times_s or [0.0])


def to_detection_in(record: DetectionRecord) -> dict:
    """The JSON item a sensor would post to ``POST /v1/detections`` for this detection."""
    body: dict = {
        "detection_id": record.detection_id,
        "sensor_id": record.sensor_id,
        "arrival_time": format_time(record.arrival_time),
        "position": {
            "lat": record.position.lat,
            "lon": record.position.lon,
            "alt_m": record.position.alt_m,
        },
    }
    if record.temperature_c is not None:
        body["temperature_c"] = record.temperature_c
    for name, value in record.features.model_dump().items():
        if value is not None:
            body[name] = value
    return body
