"""Located rounds -> incidents: deterministic ids, versions and burst updates (pure).

* A round joins an open incident of the zone if the locator attributes it to the same source
  (fired within ``update_window_s`` of the incident's latest round, within
  ``update_distance_m``, of no other kind: see :meth:`IncidentTracker.add_round`); the
  incident gets a new version (same id). Otherwise it opens a new incident. A "round" closer
  than a firearm's cycle to one the incident has is that round located twice: absorbed.
* ``incident_id`` is a UUIDv5 of the zone and the sorted detection keys of the first round, so
  re-processing the same detections after a crash yields the same id, and (processing being
  deterministic) the same versions: a downstream consumer drops the duplicates by
  (incident_id, version).
* The incident's location combines its rounds by their information (inverse covariance).
"""

from __future__ import annotations

import bisect
import itertools
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from services.locator.config import LocatorConfig
from services.locator.evidence import PulseEvidence, Score
from services.locator.rules import MIN_ROUND_INTERVAL_S
from services.locator.solver import ellipse95
from shared.geo import LocalFrame, haversine_m
from shared.schemas import IncidentEvent, IncidentLocation, IncidentRecord, Round

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_MIN_ROUND_INTERVAL = timedelta(seconds=MIN_ROUND_INTERVAL_S)

#: Namespace of incident ids (fixed forever: changing it changes every id).
INCIDENT_NAMESPACE = uuid.UUID("6f1d3c2e-5b7a-4c1e-9a40-5d0f7c8b2a11")


def incident_id(zone: str, detection_keys: Iterable[str]) -> str:
    """Deterministic id from the zone and the first round's 'sensor/detection' keys."""
    return str(uuid.uuid5(INCIDENT_NAMESPACE, zone + "\n" + "\n".join(sorted(detection_keys))))


def inverse_2x2(m: tuple[tuple[float, float], tuple[float, float]] | np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive semi-definite 2x2 matrix (``np.linalg.pinv`` where it
    is singular or nearly so: a correlation of 1 - 1e-9 or closer, or a zero variance).

    Why not pinv throughout: its SVD cost ~60 µs per call, and an incident's location inverts
    one covariance per round plus the combination on every version; the closed form agrees
    with pinv to a few ulps where it is used.
    """
    (a, b), (c, d) = m.tolist() if isinstance(m, np.ndarray) else m
    det = a * d - b * c
    if a > 0 and d > 0 and det > 1e-9 * a * d:
        return np.array([[d / det, -b / det], [-c / det, a / det]])
    return np.linalg.pinv(np.array(m, float))


@dataclass(frozen=True)
class LocatedRound:
    """One located round, in WGS84, with what it was built from."""

    shot_time: datetime
    lat: float
    lon: float
    alt_m: float
    #: Statistical horizontal covariance (east, north), m², before floors/scaling.
    covariance_m2: tuple[tuple[float, float], tuple[float, float]]
    radius95_m: float
    detection_keys: tuple[str, ...]
    sensors_used: tuple[str, ...]
    sensors_rejected: tuple[str, ...]
    residual_rms_s: float
    first_received_at: datetime
    offsets: tuple[int, ...]
    evidence: tuple[PulseEvidence, ...]
    #: (sensor_id, arrival µs since the epoch) of every member pulse: the arrival pattern a
    #: later round of the same source repeats, shifted by the round interval.
    arrivals: tuple[tuple[str, int], ...] = ()
    #: The round's class scored by itself (its pulses, no cadence): what kind of source it is
    #: on its own evidence (None = not scored).
    kind: str | None = None


class _Combination:
    """Running information sums of an incident's rounds in the first round's frame.

    Why: every version combines all rounds, so recombining from scratch made a long burst
    (fireworks: dozens of rounds) quadratic; each round's inverse covariance and local
    position are computed once, when it is folded in.
    """

    __slots__ = ("alt_sum", "count", "frame", "info", "info_xy")

    def __init__(self, first: LocatedRound) -> None:
        self.frame = LocalFrame(first.lat, first.lon, first.alt_m)
        self.count = 0
        self.info = np.zeros((2, 2))
        self.info_xy = np.zeros(2)
        self.alt_sum = 0.0

    def fold(self, rounds: list[LocatedRound]) -> None:
        """Add the rounds not yet summed (rounds are only ever appended)."""
        for rnd in rounds[self.count :]:
            info = inverse_2x2(rnd.covariance_m2)
            enu = self.frame.to_enu(rnd.lat, rnd.lon, rnd.alt_m)
            self.info += info
            self.info_xy += info @ enu[:2]
            self.alt_sum += float(enu[2])
        self.count = len(rounds)


@dataclass
class Incident:
    """An open incident: every round so far and the version last published."""

    incident_id: str
    zone: str
    version: int
    rounds: list[LocatedRound] = field(default_factory=list)
    #: (round count, config, location) of the last :meth:`location` (rounds are only ever
    #: appended): every update compares a new round with each open incident's location.
    _location: tuple[int, LocatorConfig, IncidentLocation] | None = field(
        default=None, repr=False, compare=False
    )
    _combination: _Combination | None = field(default=None, repr=False, compare=False)
    _last_shot: tuple[int, datetime] | None = field(default=None, repr=False, compare=False)
    _min_offset: tuple[int, int] | None = field(default=None, repr=False, compare=False)
    #: Every round's shot time in microseconds since the epoch, sorted (rounds are only
    #: ever appended: the first len() of them are in).
    _shot_us: list[int] = field(default_factory=list, repr=False, compare=False)
    #: The wire form of each round, aligned with ``rounds`` (built once per round).
    _wire_rounds: list[Round] = field(default_factory=list, repr=False, compare=False)

    @property
    def first(self) -> LocatedRound:
        return self.rounds[0]

    @property
    def last_shot_time(self) -> datetime:
        cached = self._last_shot
        if cached is None or cached[0] != len(self.rounds):
            cached = self._last_shot = (len(self.rounds), max(r.shot_time for r in self.rounds))
        return cached[1]

    def location(self, config: LocatorConfig) -> IncidentLocation:
        """Information-weighted combination of the rounds, with its 95 % ellipse."""
        cached = self._location
        if cached is not None and cached[0] == len(self.rounds) and cached[1] is config:
            return cached[2]
        first = self.first
        if len(self.rounds) == 1:
            cov = np.array(first.covariance_m2)
            lat, lon, alt = first.lat, first.lon, first.alt_m
        else:
            if self._combination is None:
                self._combination = _Combination(first)
            combined = self._combination
            combined.fold(self.rounds)
            cov = inverse_2x2(combined.info)
            xy = cov @ combined.info_xy
            la, lo, al = combined.frame.to_geodetic(
                [xy[0], xy[1], combined.alt_sum / len(self.rounds)]
            )
            lat, lon, alt = float(la), float(lo), float(al)
        radius, major, minor, orientation = ellipse95(cov, config)
        location = IncidentLocation(
            lat=lat, lon=lon, alt_m=alt, radius95_m=radius, semi_major_m=major,
            semi_minor_m=minor, orientation_deg=orientation,
        )
        self._location = (len(self.rounds), config, location)
        return location

    def wire_rounds(self) -> list[Round]:
        """Every round's wire form, by shot time."""
        for r in self.rounds[len(self._wire_rounds) :]:
            self._wire_rounds.append(
                Round(
                    shot_time=r.shot_time, lat=r.lat, lon=r.lon, radius95_m=r.radius95_m,
                    detection_keys=list(r.detection_keys),
                )
            )
        return sorted(self._wire_rounds, key=lambda r: r.shot_time)

    def round_intervals_s(self) -> tuple[float, ...]:
        """Seconds between consecutive shot times, in shot-time order.

        Why kept sorted as rounds come: every version is scored with its whole cadence, and
        re-sorting a show's rounds (and a timedelta per pair) on every update is quadratic
        over the show (~16 µs a version at 80 rounds). Integer microseconds give the same
        floats as ``timedelta.total_seconds``."""
        shot_us = self._shot_us
        for r in self.rounds[len(shot_us) :]:
            bisect.insort(shot_us, (r.shot_time - _EPOCH) // _US)
        return tuple((b - a) / 1e6 for a, b in itertools.pairwise(shot_us))

    def has_round_near(self, shot_time: datetime, within: timedelta) -> bool:
        """True if a round of the incident was fired less than ``within`` from ``shot_time``."""
        return any(abs(r.shot_time - shot_time) < within for r in self.rounds)

    def min_offset(self) -> int:
        """The smallest offset of any round's detections (kept as rounds are appended)."""
        cached = self._min_offset
        if cached is None or cached[0] != len(self.rounds):
            low = min(min(r.offsets) for r in self.rounds[cached[0] if cached else 0 :])
            if cached is not None:
                low = min(low, cached[1])
            cached = self._min_offset = (len(self.rounds), low)
        return cached[1]


class IncidentTracker:
    """Open incidents of one zone. Pure: time comes from the rounds (event time) or callers."""

    def __init__(self, zone: str, config: LocatorConfig) -> None:
        self.zone = zone
        self._config = config
        self._window = timedelta(seconds=config.update_window_s)
        self._open: dict[str, Incident] = {}
        #: (oldest last_shot_time, lowest offset) over the open incidents, None when stale:
        #: asked after every detection and every close, changed only by a located round.
        self._summary: tuple[datetime, int] | None = None

    def has_open(self) -> bool:
        return bool(self._open)

    @property
    def open_incidents(self) -> list[Incident]:
        return list(self._open.values())

    def earliest_last_shot(self) -> datetime | None:
        """The oldest ``last_shot_time`` of the open incidents (None if none is open).

        Why cached: the engine asks after every detection added, and a zone in a fireworks
        show holds dozens of open incidents (its bursts lie more than update_distance_m
        apart); scanning them per detection cost 6 % of the engine."""
        summary = self._summarise()
        return None if summary is None else summary[0]

    def min_offset(self) -> int | None:
        """The smallest detection offset any open incident depends on (None if none)."""
        summary = self._summarise()
        return None if summary is None else summary[1]

    def _summarise(self) -> tuple[datetime, int] | None:
        if self._summary is None and self._open:
            incidents = self._open.values()
            self._summary = (
                min(inc.last_shot_time for inc in incidents),
                min(inc.min_offset() for inc in incidents),
            )
        return self._summary

    def add_round(
        self, rnd: LocatedRound, same_kind: Callable[[Incident], bool] | None = None
    ) -> tuple[Incident, IncidentEvent] | None:
        """Attach the round to the nearest open incident of the same source, or open a new one;
        None if the round is one the incident already has (see below).

        Same source (an update may only add rounds of the source it reports):
        * fired within ``update_window_s`` of the incident's latest round;
        * at its place: within ``update_distance_m`` of its location;
        * ``same_kind(incident)`` (if given) is true: the engine's check that a round by
          itself is not of another kind than what the incident was published as.
        A round fired less than ``rules.MIN_ROUND_INTERVAL_S`` from one of the matching
        incident's rounds is that round located twice (no firearm cycles so fast): it is
        absorbed (None), not counted as one more round. Not where either is by itself
        fireworks: a crackling string pops faster than any firearm cycles.
        """
        window = self._window
        best: tuple[float, str] | None = None
        for inc in self._open.values():
            if abs(rnd.shot_time - inc.last_shot_time) > window:
                continue
            loc = inc.location(self._config)
            dist = haversine_m(loc.lat, loc.lon, rnd.lat, rnd.lon)
            near = dist <= self._config.update_distance_m
            if (
                near
                and (best is None or (dist, inc.incident_id) < best)
                and (same_kind is None or same_kind(inc))
            ):
                best = (dist, inc.incident_id)
        if best is not None:
            inc = self._open[best[1]]
            firework = "fireworks" in (rnd.kind, inc.first.kind)
            if not firework and inc.has_round_near(rnd.shot_time, _MIN_ROUND_INTERVAL):
                return None
            self._summary = None  # a round changes an incident's last shot and offsets
            inc.rounds.append(rnd)
            inc.version += 1
            return inc, "updated"
        self._summary = None
        inc = Incident(incident_id(self.zone, rnd.detection_keys), self.zone, 1, [rnd])
        self._open[inc.incident_id] = inc
        return inc, "created"

    def expires_at(self, inc: Incident) -> datetime:
        """Event time after which no round can update ``inc`` any more."""
        return inc.last_shot_time + self._window

    def forget(self, incident_id: str) -> None:
        """Drop an incident (no later round can update it)."""
        if self._open.pop(incident_id, None) is not None:
            self._summary = None

    def expire(self, before: datetime) -> list[Incident]:
        """Forget incidents that expire before ``before``; returns them."""
        earliest = self.earliest_last_shot()  # (expires_at grows with the last shot)
        if earliest is None or earliest + self._window >= before:
            return []
        gone = [i for i in self._open.values() if self.expires_at(i) < before]
        for inc in gone:
            del self._open[inc.incident_id]
        self._summary = None
        return gone


#: Classes that say "a firearm"; "fireworks" says the opposite; "other" says neither.
_GUNFIRE_KINDS = frozenset({"gunfire", "probable_gunfire"})


def same_kind(incident_kind: str | None, round_kind: str | None) -> bool:
    """False if an incident whose first round by itself is gunfire (or probable) is offered
    a round that by itself is fireworks: another source, which must not turn an alerted
    gunfire incident into fireworks (issue 22). The other way round is allowed: a fireworks
    show's rounds vary, and one that alone looks like a shot is not split off as an alert
    (its cadence is the show's). Unknown or "other" contradicts nothing."""
    return not (incident_kind in _GUNFIRE_KINDS and round_kind == "fireworks")


def to_record(
    inc: Incident, event: IncidentEvent, score: Score, published_at: datetime,
    config: LocatorConfig, *, exercise: bool = False,
) -> IncidentRecord:
    """The wire record of the incident's current version (``exercise``: built from a drill's
    pulses)."""
    used = sorted({s for r in inc.rounds for s in r.sensors_used})
    rejected = sorted({s for r in inc.rounds for s in r.sensors_rejected} - set(used))
    n = [len(r.sensors_used) for r in inc.rounds]
    rms = math.sqrt(
        sum(k * r.residual_rms_s**2 for k, r in zip(n, inc.rounds, strict=True)) / max(sum(n), 1)
    )
    times = sorted(r.shot_time for r in inc.rounds)
    return IncidentRecord(
        incident_id=inc.incident_id,
        version=inc.version,
        event=event,
        zone=inc.zone,
        classification=score.classification,
        gunfire_probability=min(max(score.probability, 0.0), 1.0),
        rounds=len(inc.rounds),
        shot_time=times[0],
        last_shot_time=times[-1],
        location=inc.location(config),
        sensor_count=len(used),
        sensors_used=used,
        sensors_rejected=rejected,
        residual_rms_s=rms,
        round_details=inc.wire_rounds(),
        first_detection_received_at=min(r.first_received_at for r in inc.rounds),
        published_at=published_at,
        exercise=exercise,
    )
