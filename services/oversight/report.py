"""The oversight report's figures, computed from plain rows (pure: no database, no HTTP).

:func:`build_report` takes what :mod:`services.oversight.records` read (alerts, their latest
CAD outcome, 911 calls, verified shootings, areas, sensors, retention runs, audit counts)
and returns a JSON-ready dict. Same rows and parameters give the same dict, key for key and
digit for digit (floats are rounded to fixed places, lists are sorted): the report must be
byte-reproducible.

Every table carries ``definition`` and ``denominator`` in words, so a reader of the JSON,
the CSV or the HTML knows what was counted over what.

Definitions shared by every figure:

* An **alert** is a stored incident whose first round was fired in the period
  ``[from 00:00 UTC, to + 1 day 00:00 UTC)`` and whose current version is not a cancel.
  Incidents of other zones that heard the same shot (``same_shot_as``) count once: the one
  with the smallest id stands for the shot.
* Its **outcome** is its latest outcome version (API or CAD import).
* Percentiles are nearest-rank: the p-th percentile of n sorted values is the value of rank
  ceil(p/100 * n), so every figure can be checked by hand.
* Public locations are grid cells of ``cell_m`` metres (see :func:`coarse_cell`); cells with
  fewer than ``min_cell_count`` alerts are suppressed.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import shapely
from shapely.geometry import Point, shape

from shared.geo import haversine_m
from shared.schemas import format_time

CLASSES = ("gunfire", "probable_gunfire", "fireworks", "other")
FINDINGS = ("confirmed", "unconfirmed", "unfounded")
#: Evidence that a gun-related crime happened (the Chicago OIG's "evidence of a gun-related
#: criminal offense"): a witness statement or an arrest alone does not show one.
GUN_CRIME_EVIDENCE = frozenset({"casings", "victim", "weapon_recovered"})
OUTSIDE = "(outside every area)"
#: Metres per degree of latitude (mean), for the grid of public cells.
M_PER_DEG = 111_320.0
#: Two-sided 95 % normal quantile, for the Wilson interval.
Z95 = 1.959963984540054


# --------------------------------------------------------------------------------------------
# Input rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    incident_id: str
    zone: str
    classification: str  # current version's
    first_classification: str  # version 1's
    event: str  # current version's
    rounds: int
    shot_time: datetime
    lat: float
    lon: float
    located_at: datetime | None = None  # version 1 published by the locator
    stored_at: datetime | None = None  # version 1 stored by dispatch
    delivered_at: datetime | None = None  # first delivery of version 1 acknowledged
    same_shot_as: tuple[str, ...] = ()
    sensors_used: tuple[str, ...] = ()  # emptied by retention


@dataclass(frozen=True)
class Outcome:
    incident_id: str
    cad_event_number: str | None = None
    entry_time: datetime | None = None
    dispatch_time: datetime | None = None
    on_scene_time: datetime | None = None
    clear_time: datetime | None = None
    units: tuple[str, ...] = ()
    units_dispatched: int = 0
    final_call_type: str | None = None
    disposition: str = ""
    finding: str | None = None
    evidence: tuple[str, ...] = ()
    report_taken: bool = False

    @property
    def unit_count(self) -> int:
        return len(self.units) or self.units_dispatched


@dataclass(frozen=True)
class Call:
    call_id: str
    received_at: datetime
    lat: float
    lon: float
    call_type: str = ""


@dataclass(frozen=True)
class Shooting:
    shooting_id: str
    shot_time: datetime
    lat: float
    lon: float


@dataclass(frozen=True)
class Area:
    name: str
    geometry: dict[str, Any]  # GeoJSON Polygon / MultiPolygon, lon-lat
    population: float | None = None


@dataclass(frozen=True)
class Sensor:
    sensor_id: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class RetentionRun:
    ran_at: datetime
    incidents_coarsened: int
    versions_redacted: int
    detections_deleted: int
    attempts_deleted: int
    calls_coarsened: int


@dataclass(frozen=True)
class Holdings:
    """What the database holds when the report is made (not bounded by the period)."""

    incidents_exact: int = 0
    incidents_coarsened: int = 0
    detections_held: int = 0
    calls_exact: int = 0
    calls_coarsened: int = 0
    audit_rows: int = 0
    audit_head_hash: str = ""  # the last row's hash: a later report proves no row was rewritten
    reads_by_role: dict[str, int] = field(default_factory=dict)  # in the period


@dataclass(frozen=True)
class Params:
    start: date
    end: date  # inclusive
    area_layer: str | None = None
    cell_m: float = 250.0
    min_cell_count: int = 3
    match_distance_m: float = 400.0
    match_window_s: float = 600.0
    shooting_window_s: float = 60.0
    located_within_m: float = 25.0
    latency_target_s: float = 60.0

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(0), UTC)


@dataclass(frozen=True)
class Inputs:
    alerts: Sequence[Alert]
    outcomes: Sequence[Outcome] = ()
    calls: Sequence[Call] = ()
    shootings: Sequence[Shooting] = ()
    areas: Sequence[Area] = ()
    sensors: Sequence[Sensor] = ()
    retention_runs: Sequence[RetentionRun] = ()
    holdings: Holdings = Holdings()
    cancelled: Sequence[Alert] = ()  # incidents of the period whose current version cancels


# --------------------------------------------------------------------------------------------
# Small pure helpers (public: the tests and the renderers use them)
# --------------------------------------------------------------------------------------------


def coarse_cell(lat: float, lon: float, cell_m: float) -> tuple[float, float]:
    """The centre (lat, lon) of the ``cell_m`` x ``cell_m`` grid cell holding a point.

    Rows are bands of latitude ``cell_m`` metres high; within a row, columns are ``cell_m``
    metres wide at the row's middle latitude. A fixed grid (not one fitted to the data), so
    the same point always lands in the same cell; rounded to 6 decimals (0.1 m).
    """
    dlat = cell_m / M_PER_DEG
    row = math.floor(lat / dlat)
    lat_c = (row + 0.5) * dlat
    dlon = cell_m / (M_PER_DEG * math.cos(math.radians(lat_c)))
    col = math.floor(lon / dlon)
    return round(lat_c, 6), round((col + 0.5) * dlon, 6)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (None, None for n = 0)."""
    if n == 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def area_km2(geometry: dict[str, Any]) -> float:
    """Area of a lon-lat polygon in km², on a local equirectangular plane at its centroid
    (within 0.1 % for a city district)."""
    geom = shape(geometry)
    lat0 = geom.centroid.y
    kx = M_PER_DEG * math.cos(math.radians(lat0)) / 1000.0
    ky = M_PER_DEG / 1000.0
    projected = shapely.transform(geom, lambda xy: xy * [kx, ky])
    return float(projected.area)


def _r(value: float | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    """b - a in seconds, or None when either is missing."""
    return None if a is None or b is None else (b - a).total_seconds()


def _table(
    title: str, definition: str, denominator: str, columns: list[str], rows: list[list[Any]]
) -> dict[str, Any]:
    return {
        "title": title,
        "definition": definition,
        "denominator": denominator,
        "columns": columns,
        "rows": rows,
    }


def week_start(day: date) -> date:
    """Monday of the ISO week holding ``day``."""
    return day - timedelta(days=day.weekday())


def one_per_shot(alerts: Iterable[Alert]) -> list[Alert]:
    """Drop an incident when a same-shot sibling with a smaller id is among ``alerts``."""
    items = list(alerts)
    ids = {a.incident_id for a in items}
    return sorted(
        (a for a in items if not any(s in ids and s < a.incident_id for s in a.same_shot_as)),
        key=lambda a: (a.shot_time, a.incident_id),
    )


class AreaIndex:
    """Which area (by name order, first match) covers a point."""

    def __init__(self, areas: Sequence[Area]) -> None:
        self.areas = sorted(areas, key=lambda a: a.name)
        self._geoms = [shape(a.geometry) for a in self.areas]
        for geom in self._geoms:
            shapely.prepare(geom)

    def name_of(self, lat: float, lon: float) -> str:
        point = Point(lon, lat)
        for area, geom in zip(self.areas, self._geoms, strict=True):
            if geom.covers(point):
                return area.name
        return OUTSIDE


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def build_report(inputs: Inputs, params: Params, *, version: str) -> dict[str, Any]:
    """Every figure of the oversight report (see the module docstring for the definitions)."""
    start, end = params.start_at, params.end_at
    alerts = one_per_shot(a for a in inputs.alerts if start <= a.shot_time < end)
    outcomes = {o.incident_id: o for o in inputs.outcomes}
    areas = AreaIndex(inputs.areas)
    area_of = {a.incident_id: areas.name_of(a.lat, a.lon) for a in alerts}
    calls = sorted(
        (c for c in inputs.calls if start <= c.received_at < end),
        key=lambda c: (c.received_at, c.call_id),
    )
    matches = _match_calls(alerts, calls, params)
    figures = {
        "1_alerts": _alerts(alerts, areas, area_of, params),
        "2_linkage": _linkage(alerts, outcomes),
        "3_outcomes": _outcomes(alerts, outcomes),
        "4_corroboration": _corroboration(alerts, calls, matches, outcomes, params),
        "5_verified_shootings": _shootings(alerts, inputs.shootings, params),
        "6_latency": _latency(alerts, params),
        "7_response": _response(alerts, outcomes),
        "8_changes_and_sensors": _changes_and_sensors(alerts, inputs, params),
        "9_holdings": _holdings(inputs, params),
    }
    return {
        "report": "Shotline oversight report",
        "shotline_version": version,
        "period": {
            "from": params.start.isoformat(),
            "to": params.end.isoformat(),
            "from_instant": format_time(start),
            "until_instant": format_time(end),
            "definition": "first round fired at or after from_instant and before until_instant",
        },
        "parameters": {
            "area_layer": params.area_layer,
            "cell_m": params.cell_m,
            "min_cell_count": params.min_cell_count,
            "match_distance_m": params.match_distance_m,
            "match_window_s": params.match_window_s,
            "shooting_window_s": params.shooting_window_s,
            "located_within_m": params.located_within_m,
            "latency_target_s": params.latency_target_s,
        },
        "alert_definition": (
            "a stored incident whose first round was fired in the period and whose current "
            "version is not a cancel; incidents of other zones reporting the same shot count "
            "once"
        ),
        "figures": figures,
    }


def _alerts(
    alerts: list[Alert], areas: AreaIndex, area_of: dict[str, str], params: Params
) -> dict[str, Any]:
    total = len(alerts)
    by_class = Counter(a.classification for a in alerts)
    multi = Counter((a.classification, a.rounds > 1) for a in alerts)
    class_rows = [
        [c, by_class[c], _share(by_class[c], total), multi[(c, False)], multi[(c, True)]]
        for c in CLASSES
    ]
    class_rows.append(
        [
            "all",
            total,
            _share(total, total),
            sum(1 for a in alerts if a.rounds == 1),
            sum(1 for a in alerts if a.rounds > 1),
        ]
    )
    weeks: list[date] = []
    monday = week_start(params.start)
    while monday <= params.end:
        weeks.append(monday)
        monday += timedelta(days=7)
    per_week = Counter((week_start(a.shot_time.date()), a.classification) for a in alerts)
    week_rows = [
        [
            w.isoformat(),
            *[per_week[(w, c)] for c in CLASSES],
            sum(per_week[(w, c)] for c in CLASSES),
        ]
        for w in weeks
    ]
    per_area = Counter(area_of.values())
    per_area_class = Counter((area_of[a.incident_id], a.classification) for a in alerts)
    area_rows = []
    for area in areas.areas:
        km2 = area_km2(area.geometry)
        n = per_area[area.name]
        area_rows.append(
            [
                area.name,
                _r(km2, 3),
                area.population,
                n,
                *[per_area_class[(area.name, c)] for c in CLASSES],
                _r(n / km2 if km2 > 0 else None, 3),
                _r(n / area.population * 10_000 if area.population else None, 3),
            ]
        )
    if per_area[OUTSIDE] or not areas.areas:
        n = per_area[OUTSIDE]
        area_rows.append(
            [OUTSIDE, None, None, n, *[per_area_class[(OUTSIDE, c)] for c in CLASSES], None, None]
        )
    cells: Counter[tuple[float, float]] = Counter()
    cell_class: Counter[tuple[float, float, str]] = Counter()
    for a in alerts:
        cell = coarse_cell(a.lat, a.lon, params.cell_m)
        cells[cell] += 1
        cell_class[(*cell, a.classification)] += 1
    shown = sorted(c for c, n in cells.items() if n >= params.min_cell_count)
    cell_rows = [
        [
            lat,
            lon,
            areas.name_of(lat, lon),
            cells[(lat, lon)],
            *[cell_class[(lat, lon, c)] for c in CLASSES],
        ]
        for lat, lon in shown
    ]
    suppressed = [c for c, n in cells.items() if n < params.min_cell_count]
    return {
        "by_class": _table(
            "Alerts by class, single and multiple rounds",
            "alerts per current classification; 'single' = one located round, 'multiple' = "
            "two or more",
            f"all {total} alerts of the period",
            ["class", "alerts", "share", "single_round", "multiple_rounds"],
            class_rows,
        ),
        "by_week": _table(
            "Alerts per week by class",
            "alerts per ISO week (Monday, UTC) of the first round, per class; the first and "
            "last weeks may be partial",
            "alerts of the period",
            ["week_of", *CLASSES, "all"],
            week_rows,
        ),
        "by_area": _table(
            "Alerts per area",
            "alerts whose location lies in the area (first area by name when they overlap); "
            "per km² of the area; per 10,000 residents when the layer gives a population",
            "alerts of the period",
            ["area", "km2", "population", "alerts", *CLASSES, "per_km2", "per_10k_residents"],
            area_rows,
        ),
        "map_cells": _table(
            "Alert locations, coarse",
            f"alerts per {params.cell_m:g} m grid cell (cell centre shown, never the exact "
            f"location); cells with fewer than {params.min_cell_count} alerts are suppressed",
            f"{sum(cells[c] for c in shown)} of {total} alerts, in shown cells; "
            f"{sum(cells[c] for c in suppressed)} alerts in {len(suppressed)} suppressed cells",
            ["cell_lat", "cell_lon", "area", "alerts", *CLASSES],
            cell_rows,
        ),
    }


def _linkage(alerts: list[Alert], outcomes: dict[str, Outcome]) -> dict[str, Any]:
    total = len(alerts)
    linked = [outcomes.get(a.incident_id) for a in alerts]
    with_any = sum(1 for o in linked if o is not None)
    with_cad = sum(1 for o in linked if o is not None and o.cad_event_number)
    with_disp = sum(1 for o in linked if o is not None and o.finding is not None)
    with_times = sum(1 for o in linked if o is not None and o.dispatch_time and o.on_scene_time)
    with_clear = sum(1 for o in linked if o is not None and o.dispatch_time and o.clear_time)
    rows = [
        ["any outcome recorded", with_any, _share(with_any, total)],
        ["CAD event number", with_cad, _share(with_cad, total)],
        ["disposition (confirmed / unconfirmed / unfounded)", with_disp, _share(with_disp, total)],
        ["unit times: dispatched and on scene", with_times, _share(with_times, total)],
        ["unit times: dispatched and cleared", with_clear, _share(with_clear, total)],
    ]
    return {
        "linkage": _table(
            "Linkage quality",
            "alerts whose latest outcome carries the item",
            f"all {total} alerts of the period",
            ["item", "alerts", "share"],
            rows,
        )
    }


def _outcomes(alerts: list[Alert], outcomes: dict[str, Outcome]) -> dict[str, Any]:
    disposed = [
        (a, outcomes[a.incident_id])
        for a in alerts
        if a.incident_id in outcomes and outcomes[a.incident_id].finding is not None
    ]
    n = len(disposed)
    findings = Counter(o.finding for _, o in disposed)
    gun_crime = sum(1 for _, o in disposed if GUN_CRIME_EVIDENCE & set(o.evidence))
    reports = sum(1 for _, o in disposed if o.report_taken)
    arrests = sum(1 for _, o in disposed if "arrest" in o.evidence)
    weapons = sum(1 for _, o in disposed if "weapon_recovered" in o.evidence)
    evidence = Counter(e for _, o in disposed for e in set(o.evidence))
    rows = [[f, findings[f], _share(findings[f], n)] for f in FINDINGS]
    rows += [
        ["evidence of a gun-related crime", gun_crime, _share(gun_crime, n)],
        ["report taken", reports, _share(reports, n)],
        ["arrest", arrests, _share(arrests, n)],
        ["weapon recovered", weapons, _share(weapons, n)],
    ]
    evidence_rows = [[e, evidence[e], _share(evidence[e], n)] for e in sorted(evidence)]
    return {
        "outcomes": _table(
            "Outcomes",
            "confirmed = the dispatch centre found the shooting happened; unconfirmed = no "
            "evidence either way; unfounded = found not to be gunfire (from the CAD "
            "disposition, through the city's mapping). Evidence of a gun-related crime = "
            "casings, a victim or a recovered weapon",
            f"{n} alerts with a disposition",
            ["outcome", "alerts", "share"],
            rows,
        ),
        "evidence": _table(
            "Evidence found",
            "alerts whose latest outcome lists the evidence (an alert can list several)",
            f"{n} alerts with a disposition",
            ["evidence", "alerts", "share"],
            evidence_rows,
        ),
    }


def _match_calls(alerts: list[Alert], calls: list[Call], params: Params) -> dict[str, list[str]]:
    """alert id -> ids of the 911 calls within the time window and the distance."""
    matched: dict[str, list[str]] = defaultdict(list)
    window = timedelta(seconds=params.match_window_s)
    times = [c.received_at for c in calls]  # calls are sorted by time
    for alert in alerts:
        first = bisect_left(times, alert.shot_time - window)
        last = bisect_right(times, alert.shot_time + window)
        for call in calls[first:last]:
            if haversine_m(alert.lat, alert.lon, call.lat, call.lon) <= params.match_distance_m:
                matched[alert.incident_id].append(call.call_id)
    return matched


def _corroboration(
    alerts: list[Alert],
    calls: list[Call],
    matches: dict[str, list[str]],
    outcomes: dict[str, Outcome],
    params: Params,
) -> dict[str, Any]:
    matched_calls = {c for ids in matches.values() for c in ids}
    strata: dict[str, list[Alert]] = {"alert with a 911 call": [], "alert with no 911 call": []}
    for alert in alerts:
        key = (
            "alert with a 911 call" if matches.get(alert.incident_id) else "alert with no 911 call"
        )
        strata[key].append(alert)
    rows = []
    for name, members in strata.items():
        disposed = [
            outcomes[a.incident_id]
            for a in members
            if a.incident_id in outcomes and outcomes[a.incident_id].finding is not None
        ]
        confirmed = sum(1 for o in disposed if o.finding == "confirmed")
        rows.append(
            [name, len(members), len(disposed), confirmed, _share(confirmed, len(disposed))]
        )
    unmatched = [c for c in calls if c.call_id not in matched_calls]
    rows.append(["911 call with no alert", len(unmatched), None, None, None])
    return {
        "corroboration": _table(
            "Corroboration by 911 calls",
            f"an alert and a 'shots fired' call match when the call came within "
            f"{params.match_window_s:g} s of the first round and within "
            f"{params.match_distance_m:g} m of the alert; confirmation rate = confirmed / "
            "alerts with a disposition in the stratum",
            f"{len(alerts)} alerts and {len(calls)} calls of the period",
            ["stratum", "count", "with_disposition", "confirmed", "confirmation_rate"],
            rows,
        )
    }


def _shootings(
    alerts: list[Alert], shootings: Sequence[Shooting], params: Params
) -> dict[str, Any]:
    start, end = params.start_at, params.end_at
    known = sorted(
        (s for s in shootings if start <= s.shot_time < end),
        key=lambda s: (s.shot_time, s.shooting_id),
    )
    window = timedelta(seconds=params.shooting_window_s)
    times = [a.shot_time for a in alerts]  # alerts are sorted by shot time
    located = mislocated = missed = 0
    rows = []
    for s in known:
        first = bisect_left(times, s.shot_time - window)
        last = bisect_right(times, s.shot_time + window)
        candidates = [
            (haversine_m(s.lat, s.lon, a.lat, a.lon), a.incident_id) for a in alerts[first:last]
        ]
        near = [c for c in candidates if c[0] <= params.match_distance_m]
        if not near:
            verdict, distance, incident = "missed", None, None
            missed += 1
        else:
            distance, incident = min(near)
            if distance <= params.located_within_m:
                verdict = "located"
                located += 1
            else:
                verdict = "mislocated"
                mislocated += 1
        rows.append([s.shooting_id, format_time(s.shot_time), verdict, incident, _r(distance, 1)])
    n = located + mislocated + missed
    low, high = wilson(located, n)
    summary = [
        ["located", located, _share(located, n)],
        ["mislocated", mislocated, _share(mislocated, n)],
        ["missed", missed, _share(missed, n)],
    ]
    return {
        "summary": _table(
            "Verified shootings: located, mislocated, missed",
            f"a verified shooting is located when an alert's first round lies within "
            f"{params.shooting_window_s:g} s of it and its location within "
            f"{params.located_within_m:g} m; mislocated when the nearest such alert lies "
            f"farther but within {params.match_distance_m:g} m; missed otherwise",
            f"{n} verified shootings of the period",
            ["verdict", "shootings", "share"],
            summary,
        ),
        "contract_rate": _table(
            "Contract formula",
            f"located within {params.located_within_m:g} m / (located + missed + "
            "mislocated), with its 95 % Wilson score interval",
            f"{n} verified shootings of the period",
            ["located", "shootings", "rate", "ci95_low", "ci95_high"],
            [[located, n, _share(located, n), _r(low), _r(high)]],
        ),
        "per_shooting": _table(
            "Verified shootings, one by one",
            "the verdict and the nearest matching alert (distance in m)",
            f"{n} verified shootings of the period",
            ["shooting_id", "shot_time", "verdict", "incident_id", "distance_m"],
            rows,
        ),
    }


def _latency(alerts: list[Alert], params: Params) -> dict[str, Any]:
    stages = [
        ("shot -> located", lambda a: _seconds(a.shot_time, a.located_at)),
        ("shot -> stored", lambda a: _seconds(a.shot_time, a.stored_at)),
        ("shot -> delivered", lambda a: _seconds(a.shot_time, a.delivered_at)),
    ]
    rows = []
    histogram: dict[str, list[int]] = {}
    edges = [0, 5, 10, 20, 30, 45, 60, 90, 120]
    for name, get in stages:
        values = [v for v in (get(a) for a in alerts) if v is not None]
        within = sum(1 for v in values if v <= params.latency_target_s)
        rows.append(
            [
                name,
                len(values),
                _r(percentile(values, 50), 3),
                _r(percentile(values, 90), 3),
                _r(percentile(values, 99), 3),
                _share(within, len(values)),
            ]
        )
        counts = [0] * len(edges)
        for v in values:
            slot = sum(1 for e in edges[1:] if v > e)
            counts[slot] += 1
        histogram[name] = counts
    labels = [f"<= {edges[i + 1]} s" for i in range(len(edges) - 1)] + [f"> {edges[-1]} s"]
    return {
        "latency": _table(
            "Shot-to-alert latency by stage",
            "seconds from the first round's emission to version 1 being located (locator "
            "published), stored (dispatch) and delivered (first receiver's acknowledgement); "
            f"nearest-rank percentiles; share within {params.latency_target_s:g} s",
            "alerts with the stage's timestamp",
            ["stage", "alerts", "p50_s", "p90_s", "p99_s", "share_within_target"],
            rows,
        ),
        "distribution": _table(
            "Latency distribution",
            "alerts per latency bin (upper bound inclusive)",
            "alerts with the stage's timestamp",
            ["stage", *labels],
            [[name, *counts] for name, counts in histogram.items()],
        ),
    }


def _response(alerts: list[Alert], outcomes: dict[str, Outcome]) -> dict[str, Any]:
    to_dispatch, to_scene = [], []
    officer_s = 0.0
    nothing = 0
    nothing_timed = 0
    for a in alerts:
        o = outcomes.get(a.incident_id)
        if o is None:
            continue
        alert_at = a.stored_at or a.shot_time
        if (v := _seconds(alert_at, o.dispatch_time)) is not None:
            to_dispatch.append(v)
        if (v := _seconds(alert_at, o.on_scene_time)) is not None:
            to_scene.append(v)
        if o.finding in ("unconfirmed", "unfounded"):
            nothing += 1
            busy = _seconds(o.dispatch_time, o.clear_time)
            if busy is not None:
                nothing_timed += 1
                officer_s += o.unit_count * busy
    rows = [
        [
            name,
            len(vals),
            _r(percentile(vals, 50), 1),
            _r(percentile(vals, 90), 1),
            _r(sum(vals) / len(vals) if vals else None, 1),
        ]
        for name, vals in (("alert -> dispatch", to_dispatch), ("alert -> on scene", to_scene))
    ]
    return {
        "response": _table(
            "Response times",
            "seconds from the alert (stored by dispatch) to the first unit dispatched and to "
            "the first unit on scene, from the CAD times",
            "alerts whose outcome has the time",
            ["interval", "alerts", "p50_s", "p90_s", "mean_s"],
            rows,
        ),
        "officer_time": _table(
            "Officer time on alerts that found nothing",
            "sum over unconfirmed and unfounded alerts of units x (cleared - dispatched)",
            f"{nothing} alerts that found nothing, {nothing_timed} of them with dispatch and "
            "clear times",
            ["alerts", "alerts_timed", "officer_hours"],
            [[nothing, nothing_timed, _r(officer_s / 3600.0, 2)]],
        ),
    }


def _changes_and_sensors(alerts: list[Alert], inputs: Inputs, params: Params) -> dict[str, Any]:
    start, end = params.start_at, params.end_at
    changes = Counter(
        (a.first_classification, a.classification)
        for a in alerts
        if a.first_classification != a.classification
    )
    cancelled = one_per_shot(c for c in inputs.cancelled if start <= c.shot_time < end)
    changes.update((c.first_classification, "cancelled") for c in cancelled)
    change_rows = [[f, t, n] for (f, t), n in sorted(changes.items())]
    changed = sum(1 for a in alerts if a.first_classification != a.classification)
    period_s = (end - start).total_seconds()
    heard = Counter(sensor for a in alerts for sensor in set(a.sensors_used))
    sensor_rows = []
    active_total = 0.0
    for s in sorted(inputs.sensors, key=lambda s: s.sensor_id):
        on = max(s.created_at, start)
        off = min(s.revoked_at or end, end)
        if off <= start or on >= end:
            continue
        active = max(0.0, (off - on).total_seconds())
        active_total += active
        sensor_rows.append([s.sensor_id, _r(active / period_s), heard[s.sensor_id]])
    n_sensors = len(sensor_rows)
    return {
        "classification_changes": _table(
            "Classification changes after the first alert",
            "alerts whose current classification differs from version 1's, and incidents "
            "cancelled after they were alerted, by (first, now)",
            f"{len(alerts)} alerts and {len(cancelled)} cancelled incidents; {changed} "
            "alerts changed class",
            ["first_class", "current_class", "count"],
            change_rows,
        ),
        "sensor_availability": _table(
            "Sensor availability",
            "share of the period each sensor was registered and not revoked (overall = "
            "registered sensor-time / (sensors x period)), and the alerts whose location used "
            "it (a registered sensor that is in none may be down; 0 also after retention)",
            f"{n_sensors} sensors registered at some time in the period; overall "
            f"{_share_f(active_total, n_sensors * period_s)}",
            ["sensor_id", "availability", "alerts_used_in"],
            sensor_rows,
        ),
    }


def _share_f(part: float, whole: float) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def _holdings(inputs: Inputs, params: Params) -> dict[str, Any]:
    h = inputs.holdings
    runs = [r for r in inputs.retention_runs if params.start_at <= r.ran_at < params.end_at]
    held = [
        ["incidents with exact location", h.incidents_exact],
        ["incidents coarsened by retention", h.incidents_coarsened],
        ["detections referenced by held incidents", h.detections_held],
        ["911 calls with exact location", h.calls_exact],
        ["911 calls coarsened by retention", h.calls_coarsened],
        ["audit log rows", h.audit_rows],
        ["audit log head (SHA-256 of its last row)", h.audit_head_hash],
    ]
    purged = [
        ["retention runs", len(runs)],
        ["incidents coarsened", sum(r.incidents_coarsened for r in runs)],
        ["incident versions redacted", sum(r.versions_redacted for r in runs)],
        ["detections deleted", sum(r.detections_deleted for r in runs)],
        ["delivery attempts deleted", sum(r.attempts_deleted for r in runs)],
        ["911 calls coarsened", sum(r.calls_coarsened for r in runs)],
    ]
    reads = [[role, n] for role, n in sorted(h.reads_by_role.items())]
    return {
        "held": _table(
            "What the system holds",
            "rows in the database when the report was made (not limited to the period)",
            "whole database",
            ["item", "count"],
            held,
        ),
        "purged": _table(
            "Purged on schedule",
            "what retention runs of the period removed: detections and exact locations "
            "older than the retention age (counts and aggregates are kept)",
            f"{len(runs)} retention runs of the period",
            ["item", "count"],
            purged,
        ),
        "reads_by_role": _table(
            "Accesses to exact incident data by role",
            "audit-log reads of an incident's exact data (location, detections) in the period",
            "audit log rows of the period",
            ["role", "reads"],
            reads,
        ),
    }


def iter_tables(report: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(file stem, table) of every table, in a fixed order (one CSV each)."""
    for group, tables in sorted(report["figures"].items()):
        for name, table in sorted(tables.items()):
            yield f"{group}__{name}", table
