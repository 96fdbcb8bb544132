"""One zone's locator state machine: detections in, incident versions out (pure, stateful).

The service feeds every detection of a zone to :meth:`ZoneEngine.add`, asks
:meth:`ZoneEngine.next_deadline` when to call :meth:`ZoneEngine.poll`, and publishes what poll
returns. The benchmarks replay recorded pulses through the same class.

Time. Grouping depends only on detection data (arrival times, positions, temperatures), never
on when detections reached us. Wall clock (``now``, always passed in) only decides *when* a
window may close: undecided pulses are decided earliest first, and the earliest one (the seed)
is decided once ``now >= t_seed + travel + window_margin_s + ingest_lateness_s``, where
``travel = max_range_m / c`` — the last instant at which another pulse of the seed's source
can arrive (see ``association``) — and not before ``ingest_lateness_s`` after the seed was
received (a seed that reached us late still waits for the rest of its shot). A window holds
only the pulses received by its deadline, so which pulses form a round, and the incident id,
depend on the pulses alone, not on how they were fetched, on a crash and a replay, or on
which sensors the engine has heard of so far. A detection older than the last decided seed is late:
it is counted and ignored.

Bounded: at most ``config.max_pending`` undecided pulses (beyond that the oldest are decided
at the next poll regardless of deadlines); decided keys are remembered only as long as a
duplicate could still be accepted; incidents are forgotten once no round can update them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Protocol, TypeVar

import numpy as np

from services.locator.association import Association, associate, echo_shadowed
from services.locator.config import LocatorConfig
from services.locator.evidence import PulseEvidence, Score, ShotEvidence
from services.locator.health import HealthTracker, SensorHealth
from services.locator.incidents import (
    Incident,
    IncidentTracker,
    LocatedRound,
    same_kind,
    to_record,
)
from services.locator.rules import (
    MIN_ROUND_INTERVAL_S,
    REPEAT_LEVEL_DB,
    REPEAT_MIN_SHARED,
    REPEAT_SPREAD_S,
    SAME_ONSET_S,
)
from shared.geo import LocalFrame, geodetic_to_ecef, haversine_m, speed_of_sound
from shared.schemas import DetectionRecord, IncidentEvent, IncidentRecord, detection_key

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: Distinct reported positions kept beyond two per sensor before the table is compacted.
_POSITIONS_SLACK = 256
#: Slowest speed of sound we plan for (about -50 °C): bounds the candidate time slice.
_C_MIN = 299.0
_NAN = float("nan")
_SAME_ONSET_US = round(SAME_ONSET_S * 1e6)
_MIN_ROUND_INTERVAL_US = round(MIN_ROUND_INTERVAL_S * 1e6)
_REPEAT_SPREAD_US = round(REPEAT_SPREAD_S * 1e6)
#: Sort key of pending pulses: their arrival time (µs), the order of ``_order`` and pools.
_arrival_us = attrgetter("t_us")


def _us(t: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    return (t - _EPOCH) // _US


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _OfAnIncident(Protocol):
    @property
    def incident_id(self) -> str: ...


_Version = TypeVar("_Version", bound=_OfAnIncident)


def latest_versions(records: list[_Version]) -> list[_Version]:
    """Only the last version of each incident in ``records`` (which holds them in rising
    version order), at the place of that last version. (The engine applies it to the rounds
    a poll decided, before building any record: a superseded version is never built.)

    Why: one poll can decide many rounds of one incident (a fireworks show, a backlog after a
    restart: 11 versions of one incident in one poll were seen, and 39 % of a replay's
    records were superseded within their poll). Publishing each would send every subscriber
    a train of alerts about one shot within milliseconds, and cost the producer, the broker
    and dispatch a record each. Every version's content is fixed by its (incident_id,
    version), so a replay that decides the same windows in other polls publishes a different
    subset of the same versions, which consumers already handle (duplicates dropped, an
    older version never regresses a newer one). A subscriber's first version need not be
    ``created``: dispatch tells a subscriber of an incident new to them as created.
    """
    if len(records) < 2:
        return records
    last = {record.incident_id: i for i, record in enumerate(records)}
    if len(last) == len(records):
        return records
    return [record for i, record in enumerate(records) if last[record.incident_id] == i]


@dataclass(frozen=True)
class _Decided:
    """A round just added to an incident, whose record is built (and scored) only if no later
    round of the same poll supersedes it: then the incident's state is still this version's."""

    incident: Incident
    event: IncidentEvent
    evidence: tuple[PulseEvidence, ...]
    residual_rms_s: float
    now: datetime

    @property
    def incident_id(self) -> str:
        return self.incident.incident_id


@dataclass(slots=True, eq=False)
class _Pending:
    """One undecided pulse. Never changed once made (``replace`` makes a new one); not frozen
    because a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    5x the cost of this one, once per detection; compared by identity only.

    It copies what the engine reads of the detection instead of holding the record. Why: a
    decoded record is nine objects the garbage collector tracks (three pydantic models, their
    dicts and field sets); held, they survive into the older generations, which every
    collection of those walks again (a live locator holds hundreds of thousands of pulses),
    while a record dropped after ``add`` is freed at once by reference counting.
    """

    #: ``(sensor_id, detection_id)``: the detection's identity (its ``key``).
    key: tuple[str, str]
    offset: int
    t_us: int
    #: ``det.arrival_time`` (the physics deadline counts from it).
    arrival_time: datetime
    #: ``det.received_at`` as recorded (the incident's first receipt is the earliest of them).
    received_at: datetime
    #: Index of the detection's sensor position in the engine's position table.
    pos_i: int
    #: Small integer code of the detection's sensor.
    code: int
    #: When it was received: ``received_at``, but never later than ``now`` when it was added
    #: (an ingest clock running ahead must not hold windows back by its error).
    received: datetime
    #: ``det.temperature_c``, at hand: every close takes the median over its whole pool.
    temperature_c: float | None
    #: ``det.sensor_id`` and ``det.features.snr_db`` (NaN if not reported), at hand: the
    #: echo test reads them for every pulse of the pool.
    sensor_id: str
    snr_db: float
    #: ``det.features`` as (peak_db, snr_db, rise_time_ms, duration_ms, spectral_centroid_hz),
    #: None where not reported: what scoring reads of a located pulse.
    features: tuple[float | None, float | None, float | None, float | None, float | None]


class ZoneEngine:
    """Associates, locates, scores and tracks incidents for one zone.

    Not thread-safe; all methods are synchronous, never block and never do I/O. ``scorer``
    turns a round's :class:`ShotEvidence` into a :class:`Score`; it must be pure.
    """

    #: Every incident of this engine is marked an exercise (the service gives a drill's
    #: pulses an engine of their own).
    exercise: bool = False

    def __init__(
        self, zone: str, config: LocatorConfig, scorer: Callable[[ShotEvidence], Score]
    ) -> None:
        self.zone = zone
        self.config = config
        self._scorer = scorer
        self._pending: dict[tuple[str, str], _Pending] = {}
        #: (t_us, sensor_id, detection_id, pending) of every pending pulse, sorted (keys are
        #: unique, so the pending itself is never compared; carried so a window's pool is a
        #: slice, not a lookup per pulse).
        self._order: list[tuple[int, str, str, _Pending]] = []
        #: (offset, key) of every pending pulse, a min-heap; decided ones are dropped lazily
        #: (why: the retained offset is asked for after every step that touched the zone).
        self._offsets: list[tuple[int, tuple[str, str]]] = []
        self._decided: dict[tuple[str, str], int] = {}  # key -> t_us, for dedup
        #: Recently decided pulses (t_us, sensor code, snr_db, peak_db; NaN if not reported;
        #: the serial of the located round it is a member of, else 0), oldest first: the
        #: sounds a later pulse may be an echo or a repeat of (kept one echo horizon).
        self._recent: deque[tuple[int, int, float, float, float]] = deque()
        self._closed_until_us: int | None = None
        self._sensors: dict[str, tuple[float, float, float]] = {}
        self._sensor_version = 0
        self._sensor_seen_us: dict[str, int] = {}
        #: (the _order entry of the seed, sensor version, its deadline): the seed's deadline
        #: is asked for after every add and poll, and changes only with the seed or the array.
        self._seed_memo: tuple[tuple[int, str, str, _Pending], int, datetime] | None = None
        # Geometry caches (why: converting lat/lon per pulse and per window dominated a close).
        # Every distinct (lat, lon, alt) reported gets an index; a sensor's code indexes its
        # latest position index and last report time, aligned lists.
        self._pos_index: dict[tuple[float, float, float], int] = {}
        self._pos_geo: list[tuple[float, float, float]] = []
        #: ECEF of every position (rows aligned with _pos_geo; capacity doubles as needed):
        #: converted once when first reported, so a frame's table is one subtraction and
        #: rotation, and distances need no frame at all.
        self._pos_ecef = np.empty((16, 3))
        #: The same ECEF as plain float triples (aligned with _pos_geo): the pre-gate of a
        #: close measures a handful of distances, where numpy's per-call cost would dominate.
        self._pos_xyz: list[tuple[float, float, float]] = []
        #: position index -> the local frame tangent there (rotation and origin cached)
        self._frames: dict[int, LocalFrame] = {}
        self._sensor_code: dict[str, int] = {}
        self._code_pos: list[int] = []
        self._code_seen: list[int] = []
        #: seed position index -> (table size, ENU of every known position in its frame)
        self._enu_cache: dict[int, tuple[int, np.ndarray]] = {}
        self._tracker = IncidentTracker(zone, config)
        self._health = HealthTracker(config)
        self._last_now: datetime | None = None
        self._closes = 0
        #: Counters for the service's metrics.
        self.duplicates = 0
        #: Reports dropped as a second report of one onset (``rules.SAME_ONSET_S``).
        self.same_onset = 0
        #: Rounds located so far (each round's serial, for the echo test's origins).
        self._rounds_located = 0
        #: Seeds whose fit lost to a larger one through one of its members (also in ``noise``).
        self.cross_round = 0
        #: Pulses left out of a window because received after its deadline (each time).
        self.received_late = 0
        #: Located rounds merged into a round of their incident fired less than
        #: ``rules.MIN_ROUND_INTERVAL_S`` before or after it (one round located twice).
        self.rounds_merged = 0
        #: sensor code -> arrival times (µs) of its last few decided pulses (same-onset test).
        self._decided_times: dict[int, deque[int]] = {}
        self.late = 0
        self.noise = 0
        #: Seeds whose fit was rejected as built from echoes (also counted in ``noise``).
        self.echoes = 0

    # ------------------------------------------------------------------ input
    def add(self, detection: DetectionRecord, offset: int, now: datetime) -> None:
        """Take one detection. Duplicates (same ``detection.key``) and late ones are ignored."""
        self._touch(now)
        key = detection.key
        if key in self._pending or key in self._decided:
            self.duplicates += 1
            return
        t_us = _us(detection.arrival_time)
        if self._closed_until_us is not None and t_us < self._closed_until_us:
            self.late += 1
            return
        sid = detection.sensor_id
        f = detection.features
        snr_db = _NAN if (snr := f.snr_db) is None else snr
        if self._same_onset(key, t_us, snr_db, f.peak_db):
            return
        pos = (detection.position.lat, detection.position.lon, detection.position.alt_m)
        pos_i = self._pos_index.get(pos)
        if pos_i is None:
            if len(self._pos_geo) >= _POSITIONS_SLACK + 2 * len(self._sensor_code):
                self._compact_positions()
            pos_i = self._pos_index[pos] = len(self._pos_geo)
            self._pos_geo.append(pos)
            if pos_i == len(self._pos_ecef):
                self._pos_ecef = np.concatenate([self._pos_ecef, np.empty_like(self._pos_ecef)])
            xyz = geodetic_to_ecef(*pos)
            self._pos_ecef[pos_i] = xyz
            self._pos_xyz.append((float(xyz[0]), float(xyz[1]), float(xyz[2])))
        code = self._sensor_code.get(sid)
        if code is None:
            code = self._sensor_code[sid] = len(self._code_pos)
            self._code_pos.append(pos_i)
            self._code_seen.append(t_us)
        if self._sensors.get(sid) != pos:
            self._sensors[sid] = pos
            self._code_pos[code] = pos_i
            self._sensor_version += 1
        seen = self._sensor_seen_us.get(sid)
        self._sensor_seen_us[sid] = t_us if seen is None else max(seen, t_us)
        self._code_seen[code] = self._sensor_seen_us[sid]
        received_at = detection.received_at
        pending = self._pending[key] = _Pending(
            key, offset, t_us, detection.arrival_time, received_at, pos_i, code,
            received_at if received_at <= now else now, detection.temperature_c, sid,
            snr_db,
            (f.peak_db, f.snr_db, f.rise_time_ms, f.duration_ms, f.spectral_centroid_hz),
        )
        bisect.insort(self._order, (t_us, sid, detection.detection_id, pending))
        heapq.heappush(self._offsets, (offset, key))

    def _same_onset(
        self, key: tuple[str, str], t_us: int, snr_db: float, peak_db: float | None
    ) -> bool:
        """True if ``key``'s pulse is one onset with another pulse of its sensor (within
        ``rules.SAME_ONSET_S``) and loses to it: then it is dropped and counted.

        Of two reports of one onset the better one stays whatever their order: higher SNR,
        then higher level, then earlier, then the smaller detection id. A pending loser is
        replaced; a decided pulse always stays (its round is out), so a re-report of it is
        dropped. Why here: left in, the copy is located a second time as a "round"
        milliseconds after the real one, doubling the round count and faking crackle.
        """
        sid = key[0]
        span = _SAME_ONSET_US
        code = self._sensor_code.get(sid)
        if code is not None:
            for t in self._decided_times.get(code, ()):
                if abs(t - t_us) <= span:
                    self.same_onset += 1
                    self._decided[key] = t_us
                    return True
        order = self._order
        i = bisect.bisect_left(order, (t_us - span,))
        mine = (-math.inf if snr_db != snr_db else snr_db,
                -math.inf if peak_db is None else peak_db, -t_us)
        while i < len(order) and order[i][0] <= t_us + span:
            entry = order[i]
            i += 1
            if entry[1] != sid:
                continue
            other = entry[3]
            peak = other.features[0]
            theirs = (-math.inf if other.snr_db != other.snr_db else other.snr_db,
                      -math.inf if peak is None else peak, -other.t_us)
            self.same_onset += 1
            if theirs > mine or (theirs == mine and other.key < key):
                self._decided[key] = t_us
                return True
            # the new report is the better one: the pending one is forgotten as its copy
            del self._pending[other.key]
            del order[i - 1]
            self._decided[other.key] = other.t_us
            self._seed_memo = None
            return False
        return False

    def _compact_positions(self) -> None:
        """Forget positions no pending pulse and no sensor uses (sensors that move or jitter).

        Keeps the position table, and so every cached ENU table, O(sensors + slack).
        """
        keep = sorted({p.pos_i for p in self._pending.values()} | set(self._code_pos))
        remap = {old: new for new, old in enumerate(keep)}
        self._pos_geo = [self._pos_geo[i] for i in keep]
        self._pos_ecef = np.concatenate([self._pos_ecef[keep], np.empty((16, 3))])
        self._pos_xyz = [self._pos_xyz[i] for i in keep]
        self._frames.clear()
        self._pos_index = {pos: i for i, pos in enumerate(self._pos_geo)}
        self._code_pos = [remap[i] for i in self._code_pos]
        self._pending = {
            k: replace(p, pos_i=remap[p.pos_i]) for k, p in self._pending.items()
        }
        self._order = [(t, sid, did, self._pending[sid, did]) for t, sid, did, _ in self._order]
        self._enu_cache.clear()

    def pending_count(self) -> int:
        """Undecided detections held (for the service's back-pressure and metrics)."""
        return len(self._pending)

    # ------------------------------------------------------------------ timing
    def _c(self, temperature_c: float | None) -> float:
        t = self.config.default_temperature_c if temperature_c is None else temperature_c
        return speed_of_sound(t)

    def _frame(self, pos_i: int) -> LocalFrame:
        """The local tangent frame at position ``pos_i`` (cached: its rotation is reused)."""
        frame = self._frames.get(pos_i)
        if frame is None:
            frame = self._frames[pos_i] = LocalFrame(*self._pos_geo[pos_i])
        return frame

    def _enu_table(self, pos_i: int) -> np.ndarray:
        """ENU (N, 3) of every known position, in the local frame at position ``pos_i``.

        Cached per origin and recomputed only when a new position has been reported, from the
        positions' cached ECEF: a zone has few sensors, so the geodesy is done once per
        position, not per pulse, window or frame. (A new zone's table grows with every sensor
        first heard, so this recompute is frequent while a zone warms up.) The frame at the
        seed's own sensor is kept: heights and the 2-D solves are relative to it.
        """
        cached = self._enu_cache.get(pos_i)
        n = len(self._pos_geo)
        if cached is not None and cached[0] == n:
            return cached[1]
        enu = self._frame(pos_i).ecef_to_enu(self._pos_ecef[:n])
        self._enu_cache[pos_i] = (n, enu)
        return enu

    def _listening(self, table: np.ndarray, t_us: int) -> np.ndarray:
        """Positions (``table``'s frame) of sensors that reported within sensor_listening_s."""
        span = int(self.config.sensor_listening_s * 1e6)
        seen = np.array(self._code_seen)
        keep = np.abs(seen - t_us) <= span
        return table[np.array(self._code_pos)[keep]]

    def _seed_deadline(self) -> datetime:
        """The deadline of the earliest pending pulse (there must be one)."""
        head = self._order[0]
        memo = self._seed_memo
        if memo is not None and memo[0] is head and memo[1] == self._sensor_version:
            return memo[2]
        deadline = self._deadline(head[3])
        self._seed_memo = (head, self._sensor_version, deadline)
        return deadline

    def _deadline(self, p: _Pending) -> datetime:
        # The farthest any pulse of the seed's source can trail it: max_range_m / c, not the
        # reach of the sensors known so far. Why: which pulses a window holds when it closes
        # (those received by its deadline) must be a function of the pulses themselves. The
        # known sensors are not: a successor re-reading a backlog after a crash, or an
        # engine that has not yet heard every sensor, knows fewer, and would close earlier
        # on fewer pulses than the live run did.
        travel = self.config.max_range_m / self._c(p.temperature_c)
        wait = travel + self.config.window_margin_s + self.config.ingest_lateness_s
        physics = p.arrival_time + timedelta(seconds=wait)
        # A seed that reached us late (sensors posting what they heard during an outage, or
        # a backlog from a relay) already has its physics deadline behind it: it would be
        # decided on its own, and the rest of its shot's pulses, delayed alike and posted one
        # by one, would then be dropped as late. It still gives them ingest_lateness_s from
        # its own receipt. (received_at is in the record: replays decide the same. The
        # service adds with now = min(wall clock, latest received_at), so a replay takes
        # the same instant unless ingest's clock ran ahead of ours.)
        received = p.received + timedelta(seconds=self.config.ingest_lateness_s)
        return physics if physics >= received else received

    def _expiry_deadline(self, last_shot: datetime) -> datetime:
        """Wall-clock instant after which no new round can update an incident."""
        wait = (
            self.config.update_window_s
            + self.config.max_range_m / _C_MIN
            + self.config.window_margin_s
            + self.config.ingest_lateness_s
        )
        return last_shot + timedelta(seconds=wait)

    def next_deadline(self) -> datetime | None:
        """Earliest instant at which :meth:`poll` can decide a window or forget an incident."""
        candidates: list[datetime] = []
        if self._order:
            candidates.append(self._seed_deadline())
            if len(self._order) > self.config.max_pending and self._last_now is not None:
                candidates.append(self._last_now)
        # (The expiry deadline grows with last_shot_time: the oldest open incident's is first.)
        oldest = self._tracker.earliest_last_shot()
        if oldest is not None:
            candidates.append(self._expiry_deadline(oldest))
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------ output
    def poll(self, now: datetime) -> list[IncidentRecord]:
        """Decide every window whose deadline is <= now; return the incident versions to
        publish: the latest version of each incident the decided windows changed (see
        :func:`latest_versions`), in the order they were decided."""
        self._touch(now)
        out: list[_Decided] = []
        while self._order:
            overfull = len(self._order) > self.config.max_pending
            if not overfull and self._seed_deadline() > now:
                break
            seed = self._order[0][3]
            out.extend(self._close(seed, now))
        oldest = self._tracker.earliest_last_shot()
        if oldest is not None and self._expiry_deadline(oldest) <= now:
            for inc in self._tracker.open_incidents:
                if self._expiry_deadline(inc.last_shot_time) <= now:
                    self._tracker.forget(inc.incident_id)
        return [self._record(decided) for decided in latest_versions(out)]

    def flush(self) -> list[IncidentRecord]:
        """Decide every pending window now, regardless of deadlines (end of a replay);
        returns the latest version of each incident changed, like :meth:`poll`."""
        out: list[_Decided] = []
        while self._order:
            seed = self._order[0][3]
            now = self._last_now or self._deadline(seed)
            out.extend(self._close(seed, now))
        return [self._record(decided) for decided in latest_versions(out)]

    def min_retained_offset(self) -> int | None:
        """Smallest offset still needed to rebuild open state (pending + open incidents).

        Only :meth:`poll` and :meth:`flush` can raise it; :meth:`add` never changes it once
        it is not None (the service relies on this: offsets added only grow)."""
        heap = self._offsets
        while heap:
            offset, key = heap[0]
            held = self._pending.get(key)
            if held is not None and held.offset == offset:
                break
            heapq.heappop(heap)
        incidents_low = self._tracker.min_offset()
        if not heap:
            return incidents_low
        return heap[0][0] if incidents_low is None else min(incidents_low, heap[0][0])

    def sensor_health(self) -> dict[str, SensorHealth]:
        return self._health.summary()

    # ------------------------------------------------------------------ internals
    def _touch(self, now: datetime) -> None:
        if self._last_now is None or now > self._last_now:
            self._last_now = now

    def _decide(self, key: tuple[str, str], located: int = 0) -> None:
        """Mark a pending pulse decided: ``located`` is the serial (>= 1) of the located round
        it is a member of, 0 if none."""
        p = self._pending.pop(key)
        i = bisect.bisect_left(self._order, (p.t_us, *key))
        del self._order[i]
        self._decided[key] = p.t_us
        peak = p.features[0]
        self._recent.append(
            (p.t_us, p.code, p.snr_db, _NAN if peak is None else peak, float(located))
        )
        times = self._decided_times.get(p.code)
        if times is None:
            times = self._decided_times[p.code] = deque(maxlen=4)
        times.append(p.t_us)

    def _close(self, seed: _Pending, now: datetime) -> list[_Decided]:
        """Decide the seed (the earliest pending pulse): locate its source or drop it."""
        self._closes += 1
        self._closed_until_us = seed.t_us
        horizon = seed.t_us + int((self.config.max_range_m / _C_MIN + 1.0) * 1e6)
        hi = bisect.bisect_right(self._order, (horizon, "\uffff", "\uffff"))
        # Only pulses received by the seed's deadline take part (the seed itself always):
        # which pulses form a round is then a function of the pulses (their arrival and
        # receipt times), not of how they were fetched. A live run closes the window at its
        # deadline, before a pulse received later is read; a replay after a crash reads the
        # backlog in large chunks and would otherwise see that pulse already pending. A
        # pulse left out stays pending: a later fit of it at the same instant and place is
        # the same round located twice, and is absorbed (rules.MIN_ROUND_INTERVAL_S).
        cutoff = self._deadline(seed)
        pool = [seed]
        for entry in self._order[1:hi]:
            p = entry[3]
            if p.received <= cutoff:
                pool.append(p)
            else:
                self.received_late += 1
        temps = [t for p in pool if (t := p.temperature_c) is not None]
        c = self._c(statistics.median(temps) if temps else None)
        found = self._associate(pool, c) if self._could_be_located(pool, c) else None
        if found is not None and self._explained_better(found[0], pool, c):
            self.cross_round += 1
            found = None
        records: list[_Decided] = []
        if found is None:
            self.noise += 1
            self._decide(seed.key)
        else:
            assoc, frame, enu = found
            decided = self._located(assoc, pool, frame, seed, enu, now)
            if decided is not None:
                records.append(decided)
        self._expire_by_event_time(seed.t_us, c)
        if self._closes % 64 == 0:
            self._decided = {k: t for k, t in self._decided.items() if t >= seed.t_us}
        return records

    def _explained_better(self, assoc: Association, pool: list[_Pending], c: float) -> bool:
        """True if a member of the seed's fit, taken as the seed of the pulses from it on,
        belongs to a source that more sensors heard: the largest consistent explanation wins.

        Why: in a burst or a fireworks show, an echo plus direct pulses of other rounds can be
        consistent with one point hundreds of metres away, and deciding seeds earliest first
        would let that phantom consume pulses of the true rounds (which then go unlocated).
        A true round's member, re-seeded, finds at most the rest of its own round. Only where
        some member's sensor holds another pulse in the window (a busy window): with one
        pulse per sensor no two sources can share a sensor's pulses."""
        members = assoc.members.tolist()
        codes = {pool[i].code for i in members}
        if self._tracker.has_open():
            # Only a fit that would open an incident can be a phantom: one at an open
            # incident's place is located where a source is (at worst with a mixed round).
            frame = self._frame(pool[0].pos_i)
            lat, lon, _ = frame.to_geodetic(assoc.fix.position)
            reach = self.config.update_distance_m
            if any(
                haversine_m(loc.lat, loc.lon, float(lat), float(lon)) <= reach
                for loc in (inc.location(self.config) for inc in self._tracker.open_incidents)
            ):
                return False
        if sum(1 for p in pool if p.code in codes) <= len(members):
            return False
        size = len(members)
        for i in sorted(members)[1:]:
            sub = pool[i:]
            # (a source heard by more sensors needs more sensors after the member)
            if len({p.code for p in sub}) <= size or self._gate_sensors(sub, c) < size:
                continue
            alt = self._associate(sub, c, count_echoes=False, larger_than=size)
            if alt is not None:
                return True
        return False

    def _associate(
        self, pool: list[_Pending], c: float, count_echoes: bool = True, larger_than: int = 0
    ) -> tuple[Association, LocalFrame, np.ndarray] | None:
        """The seed's (``pool[0]``) source, with the seed's frame and the pool's ENU, or None
        (also None if it has no more than ``larger_than`` members)."""
        seed = pool[0]
        frame = self._frame(seed.pos_i)
        table = self._enu_table(seed.pos_i)
        enu = table[[p.pos_i for p in pool]]
        times = (np.array([p.t_us for p in pool], np.int64) - seed.t_us) / 1e6
        codes = np.array([p.code for p in pool])

        def repeat_of_open(source: np.ndarray, members: np.ndarray) -> bool:
            return self._repeats_open_round(pool, frame, source, members)

        assoc = associate(
            enu, times, codes, 0, c, self.config, known_sensors=self._listening(table, seed.t_us),
            repeat_of_open=repeat_of_open if self._tracker.has_open() else None,
        )
        if assoc is None or len(assoc.members) <= larger_than:
            return None
        if self.config.reject_echo_fits and self._echo_fit(assoc, pool, times, codes, c):
            self.echoes += count_echoes
            return None
        return assoc, frame, enu

    def _repeats_open_round(
        self, pool: list[_Pending], frame: LocalFrame, source: np.ndarray, members: np.ndarray
    ) -> bool:
        """True if the fit (``source`` in ``frame``, ``members`` indices into ``pool``) is a
        later round of an open incident: at the incident's place, and its arrivals trail those
        of one of the incident's rounds by one common delay (within ``rules.REPEAT_SPREAD_S``,
        at least ``rules.MIN_ROUND_INTERVAL_S``) at every sensor, and at least
        ``rules.REPEAT_MIN_SHARED`` sensors, that heard both.

        Why: the reverberation of a round raises the noise floor for the next, and a sensor
        behind a building may hear only the first, so a later round can be heard by far fewer
        of the nearby sensors than the heard-share test asks; a source that repeats a located
        round's whole arrival pattern, shifted in time, is that source firing again."""
        lat, lon, _ = frame.to_geodetic(source)
        arrivals = {pool[i].sensor_id: pool[i].t_us for i in members.tolist()}
        seed_at = pool[0].arrival_time
        reach = timedelta(seconds=self.config.update_window_s + self.config.max_range_m / _C_MIN)
        for inc in self._tracker.open_incidents:
            if not inc.last_shot_time - reach <= seed_at <= inc.last_shot_time + reach:
                continue
            loc = inc.location(self.config)
            far = haversine_m(loc.lat, loc.lon, float(lat), float(lon))
            if far > self.config.update_distance_m:
                continue
            for rnd in inc.rounds:
                delays = [arrivals[s] - t for s, t in rnd.arrivals if s in arrivals]
                if (
                    len(delays) >= REPEAT_MIN_SHARED
                    and min(delays) >= _MIN_ROUND_INTERVAL_US
                    and max(delays) - min(delays) <= _REPEAT_SPREAD_US
                ):
                    return True
        return False

    def _gate_sensors(self, pool: list[_Pending], c: float) -> int:
        """How many sensors other than the seed's (``pool[0]``) have a pulse inside its
        physical gate: a source through the seed has at most one more member."""
        seed = pool[0]
        xyz = self._pos_xyz
        at = xyz[seed.pos_i]
        cap = self.config.max_range_m
        slack_s = self.config.association_tolerance_s + 1e-6
        heard: set[int] = set()
        for p in pool:
            if p.code == seed.code or p.code in heard:
                continue
            if (p.t_us - seed.t_us) / 1e6 <= min(math.dist(at, xyz[p.pos_i]), cap) / c + slack_s:
                heard.add(p.code)
        return len(heard)

    def _could_be_located(self, pool: list[_Pending], c: float) -> bool:
        """False if fewer than ``min_sensors - 1`` other sensors have a pulse inside the seed's
        physical gate (``association.gate``): then :func:`associate` returns None at its first
        step, and the seed is noise without building a single array.

        Why here, in plain floats: most windows are one lonely pulse (a door slam), and their
        numpy set-up cost several times the decision. The gate is taken a microsecond wider
        than associate's (ECEF and ENU distances differ in the last bits), so this never calls
        a window noise that associate would have located.
        """
        seed = pool[0]
        need = self.config.min_sensors - 1
        if len(pool) <= need:
            return False
        xyz = self._pos_xyz
        at = xyz[seed.pos_i]
        cap = self.config.max_range_m
        slack_s = self.config.association_tolerance_s + 1e-6
        heard: set[int] = set()
        for p in pool:
            if p.code == seed.code or p.code in heard:
                continue
            dt_s = (p.t_us - seed.t_us) / 1e6
            if dt_s <= min(math.dist(at, xyz[p.pos_i]), cap) / c + slack_s:
                heard.add(p.code)
                if len(heard) >= need:
                    return True
        return False

    def _echo_fit(
        self, assoc: Association, pool: list[_Pending], times: np.ndarray, codes: np.ndarray,
        c: float,
    ) -> bool:
        """True if fewer than ``min_sensors`` of the fit's members are not echoes.

        See :func:`association.echo_shadowed`: the earlier sounds are every other pending pulse
        of the pool and the pulses decided within one echo horizon before the seed
        (``times``, ``codes``: the pool's, seconds after the seed and sensor codes).
        """
        seed_us = pool[0].t_us
        horizon_s = self.config.max_range_m / c
        low = seed_us - int(horizon_s * 1e6)
        while self._recent and self._recent[0][0] < low:
            self._recent.popleft()
        members = assoc.members
        # The pool is in arrival order: a pulse at or after the latest member precedes no
        # member, so it can neither shadow one nor mark a repeat (the pool of a fireworks
        # show or a burst holds hundreds of them).
        latest = max(pool[i].t_us for i in members)
        cut = bisect.bisect_left(pool, latest, key=_arrival_us)
        # Every earlier sound goes in, at any sensor (one at another sensor never pairs with a
        # member), as arrays: (t_us, code, snr_db) rows are exact floats (epoch microseconds
        # are below 2**53), and the seconds after the seed are those of ``times``.
        recent = np.fromiter(
            itertools.chain.from_iterable(self._recent), float, 5 * len(self._recent)
        ).reshape(-1, 5)
        # Codes and loudness of the pool up to its last member, built once for both sides.
        upto = max(cut, int(members.max()) + 1)
        code_f = codes[:upto].astype(float)
        snr = np.array([p.snr_db for p in pool[:upto]])
        peak = np.array([_NAN if (v := p.features[0]) is None else v for p in pool[:upto]])
        prior_peak = np.concatenate([peak[:cut], recent[:, 3]])
        # the located round each earlier pulse belongs to (0: none, or pending)
        origin = np.concatenate([np.zeros(cut), recent[:, 4]])
        # only members of located rounds can be a repeat's partner
        partner = origin > 0
        prior_t = np.concatenate([times[:cut], (recent[:, 0] - seed_us) / 1e6])
        prior_code = np.concatenate([code_f[:cut], recent[:, 1]])
        prior_snr = np.concatenate([snr[:cut], recent[:, 2]])
        member_snr = snr[members]
        no_snr = np.isnan(member_snr)
        member_peak = np.where(no_snr, peak[members], _NAN)
        need = len(members) - self.config.min_sensors + 1  # shadowed members that reject
        # An echo phantom is the image of ONE earlier sound (a reflector makes its echoes
        # look like a source at the mirror point): its members are echoes of one located
        # round, or of sounds not located (yet). Louder pulses of other located sources,
        # which a sensor hears all the time in dense traffic, do not make a fit an echo.
        # Shadowing by one origin's pulses is shadowing by a subset of all of them: if all
        # earlier pulses together leave enough members clear, no origin can reject the fit.
        everything = echo_shadowed(
            times[members], code_f[members], member_snr, prior_t, prior_code, prior_snr,
            horizon_s, REPEAT_SPREAD_S, self.config.echo_level_margin_db, peak[members],
            prior_peak, REPEAT_LEVEL_DB, partner,
        )
        if no_snr.any():
            everything |= echo_shadowed(
                times[members], code_f[members], member_peak, prior_t, prior_code, prior_peak,
                horizon_s, REPEAT_SPREAD_S, self.config.echo_level_margin_db, peak[members],
                prior_peak, REPEAT_LEVEL_DB, partner,
            )
        if int((~everything).sum()) >= self.config.min_sensors:
            return False
        shared = prior_code[:, None] == code_f[members][None, :]
        candidates = [0.0, *sorted({
            float(o) for o in origin[(origin > 0) & shared.any(1)]
        })]
        for source in candidates:
            mine = origin == source
            if np.unique(prior_code[mine & shared.any(1)]).size < need:
                continue
            shadowed = echo_shadowed(
                times[members], code_f[members], member_snr, prior_t, prior_code,
                np.where(mine, prior_snr, _NAN), horizon_s, REPEAT_SPREAD_S,
                self.config.echo_level_margin_db, peak[members], prior_peak, REPEAT_LEVEL_DB,
                partner,
            )
            if no_snr.any():
                # Sensors that send no SNR: their level (one microphone, so the right
                # "louder than") decides instead, for the members that have no SNR.
                shadowed |= echo_shadowed(
                    times[members], code_f[members], member_peak, prior_t, prior_code,
                    np.where(mine, prior_peak, _NAN), horizon_s, REPEAT_SPREAD_S,
                    self.config.echo_level_margin_db, peak[members], prior_peak,
                    REPEAT_LEVEL_DB, partner,
                )
            if int((~shadowed).sum()) < self.config.min_sensors:
                return True
        return False

    def _located(
        self,
        assoc: Association,
        pool: list[_Pending],
        frame: LocalFrame,
        seed: _Pending,
        enu: np.ndarray,
        now: datetime,
    ) -> _Decided | None:
        fix = assoc.fix
        members = [pool[i] for i in assoc.members]
        lat, lon, alt = frame.to_geodetic(fix.position)
        for i, used, res in zip(assoc.pulses, fix.used, fix.residuals_s, strict=True):
            self._health.record(pool[i].sensor_id, float(res), rejected=not used)
        # One array operation for every member's distance (why: a norm call per pulse was an
        # eighth of a located window's cost).
        distances = np.sqrt(np.square(enu[assoc.members] - fix.position).sum(axis=1))
        evidence = tuple(
            PulseEvidence(p.sensor_id, distance, *p.features)  # (positional, in field order)
            for distance, p in zip(distances.tolist(), members, strict=True)
        )
        cov = fix.covariance_m2
        rnd = LocatedRound(
            shot_time=_dt(seed.t_us + round(fix.emission_time_s * 1e6)),
            lat=float(lat),
            lon=float(lon),
            alt_m=float(alt),
            covariance_m2=(
                (float(cov[0, 0]), float(cov[0, 1])),
                (float(cov[1, 0]), float(cov[1, 1])),
            ),
            radius95_m=fix.radius95_m,
            detection_keys=tuple(sorted(detection_key(*p.key) for p in members)),
            sensors_used=tuple(sorted(p.sensor_id for p in members)),
            sensors_rejected=tuple(sorted(pool[i].sensor_id for i in assoc.rejected)),
            residual_rms_s=fix.rms_s,
            first_received_at=min(p.received_at for p in members),
            offsets=tuple(p.offset for p in members),
            evidence=evidence,
            arrivals=tuple((p.sensor_id, p.t_us) for p in members),
            kind=self._scorer(
                ShotEvidence(evidence, len(evidence), fix.rms_s, round_intervals_s=())
            ).classification,
        )
        self._rounds_located += 1
        for p in members:
            self._decide(p.key, located=self._rounds_located)
        added = self._tracker.add_round(
            rnd, lambda inc: same_kind(inc.first.kind, rnd.kind)
        )
        if added is None:
            self.rounds_merged += 1
            return None
        inc, event = added
        return _Decided(inc, event, evidence, fix.rms_s, now)

    def _record(self, decided: _Decided) -> IncidentRecord:
        """The wire record of ``decided``'s version, scored (its incident must not have
        taken a later round since)."""
        inc = decided.incident
        score = self._scorer(
            ShotEvidence(
                pulses=decided.evidence,
                sensor_count=len(decided.evidence),
                residual_rms_s=decided.residual_rms_s,
                round_intervals_s=inc.round_intervals_s(),
            )
        )
        return to_record(
            inc, decided.event, score, decided.now, self.config, exercise=self.exercise
        )

    def _expire_by_event_time(self, seed_us: int, c: float) -> None:
        # Any later round is fired after (later seed - max range / c): incidents whose update
        # window ended before that can never be updated again — forgetting them is exact.
        horizon = _dt(seed_us) - timedelta(seconds=self.config.max_range_m / _C_MIN)
        self._tracker.expire(horizon)
