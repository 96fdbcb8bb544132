"""``shotline drill``: rehearse a shooting through a real deployment, marked as an exercise.

A drill simulates a situation (``services.locator.simulate``) around the deployment's own
sensors and posts each sensor's pulses to the deployment's ingest **at real time** (each when
its sound would have reached the sensor), with that sensor's own token and ``exercise: true``
on every pulse. The flag travels end to end: ingest writes it on the detection record, the
locator gives a drill's pulses an engine of their own (never associated with a real pulse) and
marks each incident of it ``exercise``, and dispatch renders it in every format (CAP
``status=Exercise`` with a ``<note>``, EIDO's internal type and notes, JSON ``exercise: true``,
a ``shotline-exercise: true`` header, the push title). Nothing in the chain can turn it back
into ``Actual``: no step clears the flag, and an older consumer that does not know the field
dead-letters the record instead of delivering it.

The truth file records what was fired; ``shotline drill score`` compares it with the alerts
a CAD captured.

Files:

* sensors (``--tokens``): JSON, a list of ``{"sensor_id", "token", "lat", "lon", "alt_m"}``
  (the tokens ``shotline sensors add`` printed; the positions as registered).
* capture (``--alerts``): JSON lines, one alert per line: ``{"received_at": RFC 3339,
  "body": <the native JSON alert>}`` (or the bare alert, whose ``published_at`` then stands
  in for its receipt).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from services.locator.simulate import (
    MILE_M,
    SCENARIO_KINDS,
    CityArray,
    Scenario,
    SimSensor,
    scenario,
    to_detection_in,
)
from shared.geo import haversine_m

#: Scenarios a drill may replay (``mixed`` lasts ten minutes of random traffic: not a drill).
DRILL_SCENARIOS = tuple(k for k in SCENARIO_KINDS if k != "mixed")
#: An alert is of a fired event when its first shot is within this of the event's first
#: shot: a located shot time is within milliseconds; a second covers a first round missed.
MATCH_TIME_S = 2.0
#: ... and its location within this or 3x its own 95 % radius, whichever is more.
MATCH_DISTANCE_M = 150.0


class DrillError(ValueError):
    """Bad drill input (a file, a scenario name): the message names it."""


@dataclass(frozen=True)
class DrillSensor:
    sensor_id: str
    token: str
    lat: float
    lon: float
    alt_m: float


def read_sensors(path: Path) -> list[DrillSensor]:
    """The sensors file (see the module docstring). Raises DrillError naming the problem."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise DrillError(f"--tokens: {path} does not exist") from exc
    except orjson.JSONDecodeError as exc:
        raise DrillError(f"--tokens: {path} is not JSON: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise DrillError(f"--tokens: {path} must hold a non-empty JSON list of sensors")
    sensors = []
    for i, item in enumerate(raw):
        try:
            sensors.append(
                DrillSensor(
                    str(item["sensor_id"]), str(item["token"]), float(item["lat"]),
                    float(item["lon"]), float(item.get("alt_m", 0.0)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DrillError(
                f"--tokens: sensor {i} needs sensor_id, token, lat, lon (and alt_m): {exc!r}"
            ) from exc
    return sensors


def array_of(sensors: list[DrillSensor]) -> CityArray:
    """The deployment's sensors as the simulator's array (centred on their mean, covering
    their bounding box), so that a situation is placed among them."""
    lat0 = sum(s.lat for s in sensors) / len(sensors)
    lon0 = sum(s.lon for s in sensors) / len(sensors)
    north = max(haversine_m(s.lat, lon0, lat0, lon0) for s in sensors)
    east = max(haversine_m(lat0, s.lon, lat0, lon0) for s in sensors)
    side_m = max(2 * max(north, east), 200.0)
    ground = min(s.alt_m for s in sensors) - 8.0
    return CityArray(
        tuple(SimSensor(s.sensor_id, "drill", s.lat, s.lon, s.alt_m) for s in sensors),
        (lat0, lon0),
        (side_m / MILE_M) ** 2,
        ground,
    )


def plan(
    sensors: list[DrillSensor], kind: str, *, start: datetime, seed: int, drill_id: str
) -> tuple[Scenario, list[tuple[datetime, str, dict[str, Any]]]]:
    """The situation and what to post: (when, sensor_id, detection item with exercise=True),
    sorted by when (the pulse's arrival). Raises DrillError on an unknown scenario."""
    if kind not in DRILL_SCENARIOS:
        raise DrillError(f"--scenario {kind!r}: expected one of {', '.join(DRILL_SCENARIOS)}")
    situation = scenario(kind, array_of(sensors), start=start, rng=np.random.default_rng(seed))
    posts = []
    for record in situation.detections:
        item = to_detection_in(record)
        item["detection_id"] = f"{drill_id}-{record.detection_id}"[:128]
        item["exercise"] = True
        posts.append((record.arrival_time, record.sensor_id, item))
    posts.sort(key=lambda p: p[0])
    return situation, posts


def truth_document(
    situation: Scenario, *, drill_id: str, kind: str, ingest: str, statuses: dict[str, int]
) -> dict[str, Any]:
    return {
        "drill_id": drill_id,
        "scenario": kind,
        "ingest": ingest,
        "exercise": True,
        "events": [
            {
                "event_id": e.event_id,
                "kind": e.kind,
                "lat": e.lat,
                "lon": e.lon,
                "alt_m": e.alt_m,
                "rounds": len(e.times),
                "shot_times": [t.isoformat() for t in e.times],
            }
            for e in situation.truth
            if e.kind != "noise"
        ],
        "detections_posted": sum(statuses.values()),
        "statuses": statuses,
    }


Sleep = Callable[[float], Awaitable[None]]


async def run_drill(
    ingest: str,
    sensors: list[DrillSensor],
    kind: str,
    *,
    seed: int = 0,
    lead_s: float = 1.0,
    http: httpx.AsyncClient | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """Fire the drill at real time; returns the truth document. Each pulse is posted once
    its arrival time has passed (as its sensor would), grouped per sensor and instant.

    Raises DrillError on a refused request (401/403: a token; 4xx: the body) or an
    unreachable ingest. A 503 is retried, as a sensor would."""
    drill_id = f"drill-{secrets.token_hex(4)}"
    token = {s.sensor_id: s.token for s in sensors}
    situation, posts = plan(
        sensors, kind, start=now() + timedelta(seconds=lead_s), seed=seed, drill_id=drill_id
    )
    statuses: dict[str, int] = defaultdict(int)
    own = http is None
    client = http or httpx.AsyncClient(timeout=10)
    try:
        i = 0
        while i < len(posts):
            due = posts[i][0]
            wait = (due - now()).total_seconds()
            if wait > 0:
                await sleep(wait)
            batch: dict[str, list[dict[str, Any]]] = defaultdict(list)
            current = now()
            while i < len(posts) and posts[i][0] <= current:
                batch[posts[i][1]].append(posts[i][2])
                i += 1
            if not batch:  # woke early
                continue
            results = await asyncio.gather(
                *(_post(client, ingest, token[sid], items) for sid, items in batch.items())
            )
            for result in results:
                for status in result:
                    statuses[status] += 1
    finally:
        if own:
            await client.aclose()
    return truth_document(situation, drill_id=drill_id, kind=kind, ingest=ingest,
                          statuses=dict(statuses))


async def _post(
    client: httpx.AsyncClient, ingest: str, token: str, items: list[dict[str, Any]]
) -> list[str]:
    url = f"{ingest.rstrip('/')}/v1/detections"
    for attempt in range(5):
        try:
            answer = await client.post(
                url, headers={"Authorization": f"Bearer {token}"}, json={"detections": items}
            )
        except httpx.HTTPError as exc:
            raise DrillError(f"--ingest {ingest}: {exc!r}") from exc
        if answer.status_code == 503 and attempt < 4:
            await asyncio.sleep(0.2 * 2**attempt)
            continue
        if answer.status_code in (401, 403):
            raise DrillError(f"--tokens: ingest refused a sensor's token ({answer.status_code})")
        if answer.status_code != 202:
            raise DrillError(f"ingest answered {answer.status_code}: {answer.text[:300]}")
        return [r["status"] for r in answer.json()["results"]]
    raise DrillError(f"--ingest {ingest}: 503 five times")  # pragma: no cover


# ---------------------------------------------------------------------------------- scoring


def read_capture(path: Path) -> list[tuple[datetime, dict[str, Any]]]:
    """(received_at, alert data) of every captured native JSON alert. Raises DrillError."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError as exc:
        raise DrillError(f"--alerts: {path} does not exist") from exc
    alerts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            body = item.get("body", item)
            if isinstance(body, str):
                body = orjson.loads(body)
            data = body["data"]
            received = item.get("received_at") or data["published_at"]
            alerts.append((datetime.fromisoformat(received.replace("Z", "+00:00")), data))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DrillError(f"--alerts: {path} line {n} is not a captured alert: {exc!r}") from exc
    return alerts


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def score(truth: dict[str, Any], capture: list[tuple[datetime, dict[str, Any]]]) -> dict[str, Any]:
    """Detection, location error, rounds, false alerts and latency of a drill.

    Alerts are grouped by incident: its first receipt is its latency, its latest version its
    location and rounds. A fired gunfire event is detected by the nearest incident whose
    first shot is within ``MATCH_TIME_S`` of the event's and whose location is within
    ``MATCH_DISTANCE_M`` (or 3x its 95 % radius), exercise or not. A gunfire-classed
    exercise incident that matches no fired gunfire is a false alert. An incident matched to a
    fired event but not marked ``exercise`` counts in ``not_marked_exercise`` (a drill
    delivered as real: must be 0); real alerts of other shots meanwhile are only counted.
    """
    events = [e for e in truth["events"] if e["kind"] == "gunfire"]
    first_shot = min(_time(t) for e in truth["events"] for t in e["shot_times"]) if truth[
        "events"
    ] else None
    incidents: dict[str, dict[str, Any]] = {}
    for received, data in sorted(capture, key=lambda a: a[0]):
        inc = incidents.setdefault(data["incident_id"], {"first_received": received})
        if data["version"] >= inc.get("version", 0):
            inc.update(version=data["version"], data=data)
    span_start = first_shot - timedelta(seconds=30) if first_shot else None
    in_span = {
        k: v for k, v in incidents.items()
        if span_start is not None and _time(v["data"]["shot_time"]) >= span_start
    }
    used: set[str] = set()
    rows = []
    for e in events:
        shot = _time(e["shot_times"][0])
        best: tuple[float, str] | None = None
        for key, inc in in_span.items():
            d = inc["data"]
            if d["event"] == "cancelled" or key in used:
                continue
            if abs((_time(d["shot_time"]) - shot).total_seconds()) > MATCH_TIME_S:
                continue
            loc = d["location"]
            err = float(haversine_m(loc["lat"], loc["lon"], e["lat"], e["lon"]))
            if err <= max(MATCH_DISTANCE_M, 3 * loc["radius95_m"]) and (
                best is None or err < best[0]
            ):
                best = (err, key)
        if best is None:
            rows.append({"event_id": e["event_id"], "detected": False, "rounds": e["rounds"]})
            continue
        used.add(best[1])
        inc = in_span[best[1]]
        rows.append({
            "event_id": e["event_id"],
            "detected": True,
            "incident_id": best[1],
            "location_error_m": round(best[0], 1),
            "rounds": e["rounds"],
            "rounds_alerted": inc["data"]["rounds"],
            "latency_s": round((inc["first_received"] - shot).total_seconds(), 3),
        })
    def exercise(key: str) -> bool:
        return bool(in_span[key]["data"].get("exercise", False))

    not_exercise = sum(1 for k in used if not exercise(k))
    false_alerts = [
        k for k, v in in_span.items()
        if k not in used and exercise(k) and v["data"]["event"] != "cancelled"
        and v["data"]["classification"] in ("gunfire", "probable_gunfire")
    ]
    detected = [r for r in rows if r["detected"]]
    latencies = [r["latency_s"] for r in detected]
    errors = [r["location_error_m"] for r in detected]
    return {
        "drill_id": truth.get("drill_id"),
        "scenario": truth.get("scenario"),
        "gunfire_events": len(events),
        "detected": len(detected),
        "detection_rate": len(detected) / len(events) if events else None,
        "median_location_error_m": statistics.median(errors) if errors else None,
        "rounds_exact": sum(1 for r in detected if r["rounds_alerted"] == r["rounds"]),
        "false_alerts": len(false_alerts),
        "not_marked_exercise": not_exercise,
        "real_alerts_meanwhile": sum(1 for k in in_span if k not in used and not exercise(k)),
        "median_latency_s": statistics.median(latencies) if latencies else None,
        "max_latency_s": max(latencies) if latencies else None,
        "events": rows,
    }
