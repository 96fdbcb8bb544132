"""The fixture city of the oversight tests: the simulator's Pittsburgh array, November 2026.

Everything here is chosen so that every figure of the report can be computed by hand (the
test does, in its comments). Alerts sit in three 250 m public grid cells:

* cell X (North, ~500 m north of the array centre): A1 A2 A3 A4 (+ A10 cancelled, A12 in
  October);
* cell Y (North, ~1 km east of X): A5 A6 (2 alerts: suppressed at k = 3);
* cell Z (South, ~700 m south of the centre): A7 A8 A9 (+ A11: zone z2's report of A7's
  shot, which counts once).

Latencies (s after the first round: located, stored, delivered), CAD times (s after
stored), 911 calls and verified shootings are in the tables below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import shapely
from shapely.geometry import box

from services.dispatch import store
from services.locator.simulate import build_array
from services.oversight.report import M_PER_DEG, coarse_cell
from shared.schemas import IncidentLocation, IncidentRecord, Round

ARRAY = build_array(density_per_sq_mi=12, area_sq_mi=2.0, seed=3)
FRAME = ARRAY.frame
CELL_M = 250.0
NY = ZoneInfo("America/New_York")


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    return (
        lat + north_m / M_PER_DEG,
        lon + east_m / (M_PER_DEG * math.cos(math.radians(lat))),
    )


def _enu(east_m: float, north_m: float) -> tuple[float, float]:
    lat, lon, _ = FRAME.to_geodetic([east_m, north_m, 0.0])
    return float(lat), float(lon)


CELLS = {
    "X": coarse_cell(*_enu(0.0, 500.0), CELL_M),
    "Y": coarse_cell(*_enu(1000.0, 500.0), CELL_M),
    "Z": coarse_cell(*_enu(0.0, -700.0), CELL_M),
}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Spec:
    key: str
    cell: str
    east: float
    north: float
    shot: datetime
    first_class: str
    now_class: str
    rounds: int
    located: float
    stored: float
    delivered: float | None
    zone: str = "z1"
    cancelled: bool = False

    @property
    def incident_id(self) -> str:
        return f"fx-{self.key.lower()}"

    @property
    def position(self) -> tuple[float, float]:
        return offset(*CELLS[self.cell], self.east, self.north)


SPECS = [
    Spec("A01", "X", 0, 0, t("2026-11-03T15:00:00"), "gunfire", "gunfire", 3, 3, 4, 5),
    Spec("A02", "X", 30, 0, t("2026-11-03T15:20:00"), "gunfire", "gunfire", 1, 2, 3, 4),
    Spec("A03", "X", -30, 20, t("2026-11-10T02:00:00"), "gunfire", "probable_gunfire", 2, 5, 6, 8),
    Spec("A04", "X", 0, -30, t("2026-11-05T23:30:00"), "fireworks", "fireworks", 8, 10, 11, 70),
    Spec("A05", "Y", 0, 0, t("2026-11-17T20:00:00"), "gunfire", "gunfire", 1, 4, 5, None),
    Spec("A06", "Y", 20, 20, t("2026-11-18T21:00:00"), "other", "other", 1, 1, 2, 3),
    Spec("A07", "Z", 0, 0, t("2026-11-24T01:00:00"), "gunfire", "gunfire", 5, 6, 7, 9),
    Spec(
        "A08",
        "Z",
        -25,
        10,
        t("2026-11-30T22:00:00"),
        "probable_gunfire",
        "probable_gunfire",
        1,
        30,
        65,
        66,
    ),
    Spec("A09", "Z", 15, -35, t("2026-11-01T12:00:00"), "gunfire", "gunfire", 2, 8, 9, 10),
    Spec(
        "A10",
        "X",
        10,
        10,
        t("2026-11-12T10:00:00"),
        "gunfire",
        "gunfire",
        2,
        3,
        4,
        5,
        cancelled=True,
    ),
    Spec("A11", "Z", 5, 5, t("2026-11-24T01:00:00.1"), "gunfire", "gunfire", 5, 6, 7, 9, "z2"),
    Spec("A12", "X", 5, 5, t("2026-10-31T23:59:59"), "gunfire", "gunfire", 1, 3, 4, 5),
]
BY_KEY = {s.key: s for s in SPECS}


def _record(spec: Spec, version: int, classification: str, event: str) -> IncidentRecord:
    lat, lon = spec.position
    rounds = []
    if spec.key == "A01":  # 3 rounds x 4 sensors: 12 detections held
        rounds = [
            Round(
                shot_time=spec.shot + timedelta(seconds=0.3 * i),
                lat=lat,
                lon=lon,
                radius95_m=12.0,
                detection_keys=[f"{s.sensor_id}/d{i}" for s in ARRAY.sensors[:4]],
            )
            for i in range(3)
        ]
    return IncidentRecord(
        incident_id=spec.incident_id,
        version=version,
        event=event,  # type: ignore[arg-type]
        zone=spec.zone,
        classification=classification,  # type: ignore[arg-type]
        gunfire_probability=0.9,
        rounds=spec.rounds,
        shot_time=spec.shot,
        last_shot_time=spec.shot + timedelta(seconds=spec.rounds * 0.3),
        location=IncidentLocation(lat=lat, lon=lon, radius95_m=12.0),
        sensor_count=4,
        sensors_used=[s.sensor_id for s in ARRAY.sensors[:4]],
        round_details=rounds,
        first_detection_received_at=spec.shot + timedelta(seconds=1),
        published_at=spec.shot + timedelta(seconds=spec.located + (version - 1) * 30),
    )


def _no_plan(*_: object) -> list[store.PlannedDelivery]:
    return []


def stored_at(spec: Spec) -> datetime:
    return spec.shot + timedelta(seconds=spec.stored)


AREAS = {  # (west, south, east, north) in metres from the array centre; residents
    "North": ((-2000.0, 0.0, 2000.0, 2000.0), 20_000),
    "South": ((-2000.0, -2000.0, 2000.0, 0.0), 10_000),
}


def area_geometry(name: str) -> shapely.Geometry:
    (w, s, e, n), _ = AREAS[name]
    lat_s, lon_w = _enu(w, s)
    lat_n, lon_e = _enu(e, n)
    return box(lon_w, lat_s, lon_e, lat_n)


async def build_city(pool: asyncpg.Pool) -> None:
    """Sensors, incidents (with versions, latencies and deliveries) and the areas layer."""
    async with pool.acquire() as conn:
        for i, s in enumerate(ARRAY.sensors):
            created = t("2026-11-21T00:00:00") if i == 1 else t("2026-10-01T00:00:00")
            revoked = t("2026-11-16T00:00:00") if i == 0 else None
            await conn.execute(
                """INSERT INTO sensors (sensor_id, zone, lat, lon, alt_m, status, token_hash,
                                        created_at, revoked_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                s.sensor_id,
                "z1",
                s.lat,
                s.lon,
                s.alt_m,
                "revoked" if revoked else "active",
                s.sensor_id.encode(),
                created,
                revoked,
            )
    sub = await store.create_subscription(
        pool,
        name="cad",
        channel="webhook",
        geofence={
            "type": "Polygon",
            "coordinates": [[[-80.1, 40.3], [-79.8, 40.3], [-79.8, 40.6], [-80.1, 40.3]]],
        },
        classes=["gunfire"],
        min_probability=0.5,
        events=["created"],
        format="json",
        url="https://cad.example/hook",
        push=None,
        secret="whsec_x",
    )
    for spec in SPECS:
        await store.store_incident(pool, _record(spec, 1, spec.first_class, "created"), _no_plan)
        if spec.now_class != spec.first_class:
            await store.store_incident(pool, _record(spec, 2, spec.now_class, "updated"), _no_plan)
        if spec.cancelled:
            await store.store_incident(
                pool, _record(spec, 2, spec.first_class, "cancelled"), _no_plan
            )
        await pool.execute(
            "UPDATE dispatch_incident_versions SET consumed_at = $2 "
            "WHERE incident_id = $1 AND version = 1",
            spec.incident_id,
            stored_at(spec),
        )
        if spec.delivered is not None:
            await pool.execute(
                """INSERT INTO dispatch_deliveries (subscription_id, incident_id, version, event,
                     channel, endpoint, webhook_id, status, attempts, delivered_at)
                   VALUES ($1, $2, 1, 'created', 'webhook', 'https://cad.example:443', $3,
                           'delivered', 1, $4)""",
                sub.subscription_id,
                spec.incident_id,
                f"msg_{spec.incident_id}",
                spec.shot + timedelta(seconds=spec.delivered),
            )
    await pool.execute(
        "UPDATE dispatch_incidents SET same_shot_as = ARRAY[$2] WHERE incident_id = $1",
        "fx-a07",
        "fx-a11",
    )
    await pool.execute(
        "UPDATE dispatch_incidents SET same_shot_as = ARRAY[$2] WHERE incident_id = $1",
        "fx-a11",
        "fx-a07",
    )
    await load_areas(pool)


async def load_areas(pool: asyncpg.Pool) -> None:
    """The 'districts' layer, in the areas table's shape (layer, name, WKB, attributes)."""
    await pool.execute(
        """CREATE TABLE IF NOT EXISTS geo_areas (
             layer text NOT NULL, name text NOT NULL, geometry bytea NOT NULL,
             attributes jsonb NOT NULL DEFAULT '{}', PRIMARY KEY (layer, name))"""
    )
    for name, (_, population) in AREAS.items():
        await pool.execute(
            "INSERT INTO geo_areas (layer, name, geometry, attributes) "
            "VALUES ('districts', $1, $2, $3::jsonb)",
            name,
            shapely.to_wkb(area_geometry(name)),
            f'{{"population": {population}}}',
        )


# --------------------------------------------------------------------------------------------
# The city's exports
# --------------------------------------------------------------------------------------------

CAD_MAPPING = """\
columns:
  incident_id: ShotlineID
  cad_event_number: EventNo
  entry_time: Entered
  dispatch_time: Dispatched
  on_scene_time: OnScene
  clear_time: Cleared
  units: Units
  final_call_type: FinalType
  disposition: Dispo
  evidence: Evidence
  report_taken: Report
time_format: "%m/%d/%Y %H:%M:%S"
timezone: America/New_York
finding_from: disposition
findings:
  confirmed: [SHOTS]
  unconfirmed: [GOA]
  unfounded: [UNF]
evidence_codes: {CAS: casings, VIC: victim, WPN: weapon_recovered, ARR: arrest}
"""


def _local(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(NY).strftime("%m/%d/%Y %H:%M:%S")


def _cad_row(
    key: str,
    event_no: str,
    dispatch: float | None,
    on_scene: float | None,
    busy: float | None,
    units: str,
    dispo: str,
    evidence: str,
    report: str,
) -> str:
    base = stored_at(BY_KEY[key])

    def at(s: float | None) -> datetime | None:
        return None if s is None else base + timedelta(seconds=s)

    entered = at(20) if dispatch is not None else None
    cleared = None if dispatch is None or busy is None else at(dispatch + busy)
    final_type = "SHOTS FIRED" if dispo else ""
    return ",".join(
        [
            BY_KEY[key].incident_id,
            event_no,
            _local(entered),
            _local(at(dispatch)),
            _local(at(on_scene)),
            _local(cleared),
            units,
            final_type,
            dispo,
            evidence,
            report,
        ]
    )


def cad_csv() -> str:
    """Line 4 has a bad time and line 6 an unknown incident; the other five are good."""
    lines = [
        "ShotlineID,EventNo,Entered,Dispatched,OnScene,Cleared,Units,FinalType,Dispo,Evidence,"
        "Report",
        _cad_row("A01", "C-1", 60, 300, 1800, "1A;1B", "SHOTS", "CAS", "Y"),
        _cad_row("A02", "C-2", 120, 600, 600, "2A", "GOA", "", "N"),
        "fx-a04,C-4,,yesterday,,,4A,SHOTS FIRED,GOA,,N",
        _cad_row("A03", "C-3", 90, None, 1200, "3A;3B;3C", "UNF", "", "N"),
        "fx-nope,C-9,,,,,,,,,",
        _cad_row("A05", "C-5", None, None, None, "", "", "", ""),
        _cad_row("A07", "C-7", 30, 240, 3600, "7A", "SHOTS", "CAS;WPN;ARR", "Y"),
    ]
    return "\n".join(lines) + "\n"


CALLS_MAPPING = """\
columns: {call_id: IncidentNo, received_at: CallTime, lat: Lat, lon: Lon, call_type: Type}
call_types: [SHOTS FIRED]
"""


def _call(call_id: str, moment: datetime, lat: float, lon: float, kind: str) -> str:
    return f"{call_id},{moment.isoformat()},{lat:.7f},{lon:.7f},{kind}"


def calls_csv() -> str:
    """K1 corroborates A1, K2 corroborates A7; K3 and K4 have no alert; K5 is in December;
    K6 is not a shots-fired call; line 8 (K7) has a bad latitude."""
    a1, a5, a7 = BY_KEY["A01"], BY_KEY["A05"], BY_KEY["A07"]
    sec = lambda s: timedelta(seconds=s)  # noqa: E731
    lines = [
        "IncidentNo,CallTime,Lat,Lon,Type",
        _call("K1", a1.shot + sec(120), *offset(*a1.position, 0, 100), "SHOTS FIRED"),
        _call("K2", a7.shot + sec(300), *offset(*a7.position, 350, 0), "SHOTS FIRED"),
        _call("K3", a5.shot + sec(60), *offset(*a5.position, 600, 0), "SHOTS FIRED"),
        _call("K4", t("2026-11-20T03:00:00"), *offset(*CELLS["X"], 0, 3000), "SHOTS FIRED"),
        _call("K5", t("2026-12-02T00:00:00"), *CELLS["X"], "SHOTS FIRED"),
        _call("K6", BY_KEY["A02"].shot, *BY_KEY["A02"].position, "NOISE COMPLAINT"),
        "K7,2026-11-21T00:00:00+00:00,north,-79.99,SHOTS FIRED",
    ]
    return "\n".join(lines) + "\n"


SHOOTINGS_MAPPING = """\
columns: {shooting_id: CaseNo, shot_time: Time, lat: Lat, lon: Lon}
source: RMS
"""


def shootings_csv() -> str:
    """S1 and S4 located (10 m, 5 m), S2 mislocated (80 m), S3 missed."""
    a1, a5, a7 = BY_KEY["A01"], BY_KEY["A05"], BY_KEY["A07"]
    lines = [
        "CaseNo,Time,Lat,Lon",
        _call("S1", a1.shot, *offset(*a1.position, 10, 0), "").rstrip(","),
        _call("S2", a7.shot + timedelta(seconds=5), *offset(*a7.position, 0, 80), "").rstrip(","),
        _call("S3", t("2026-11-12T05:00:00"), *offset(*CELLS["Z"], 0, -3000), "").rstrip(","),
        _call("S4", a5.shot, *offset(*a5.position, 0, 5), "").rstrip(","),
    ]
    return "\n".join(lines) + "\n"
