"""A small synthetic city with known answers, laid out in metres east/north of an origin.

Streets: Main St along north=0 (split at east -200, 0 and 200), 2nd Ave along east=0 (split
at north=0), 3rd Ave along east=200 (one segment, crossing Main St and Oak St without a
shared vertex), Oak St along north=300. Beats: A west of east=0, B east of it (each 500 m
wide, -500..500 north); district D1 covers the south half only. Zone z1's sensors sit at
(+-300, +-300).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
import shapely
import shapely.geometry

from services.dispatch.gazetteer import AddressPoints, Area, Layers, Street
from shared.geo import LocalFrame

FRAME = LocalFrame(40.44, -79.99)


def lat_lon(east: float, north: float) -> tuple[float, float]:
    lat, lon, _ = FRAME.to_geodetic([east, north, 0.0])
    return float(lat), float(lon)


def line(*points: tuple[float, float]) -> shapely.LineString:
    return shapely.LineString([lat_lon(e, n)[::-1] for e, n in points])


def box(e0: float, n0: float, e1: float, n1: float) -> shapely.Polygon:
    return shapely.Polygon(
        [lat_lon(e, n)[::-1] for e, n in ((e0, n0), (e1, n0), (e1, n1), (e0, n1), (e0, n0))]
    )


STREETS = [
    ("Main St", line((-500, 0), (-200, 0))),
    ("Main St", line((-200, 0), (0, 0))),
    ("Main St", line((0, 0), (200, 0))),
    ("Main St", line((200, 0), (500, 0))),
    ("2nd Ave", line((0, -500), (0, 0))),
    ("2nd Ave", line((0, 0), (0, 500))),
    ("3rd Ave", line((200, -500), (200, 500))),
    ("Oak St", line((-500, 300), (500, 300))),
]

AREAS = [
    ("beat", "B", box(0, -500, 500, 500)),
    ("beat", "A", box(-500, -500, 0, 500)),
    ("district", "D1", box(-500, -500, 500, 0)),
]

#: (number, street, unit, east, north)
ADDRESSES = [
    ("12", "Main St", "", -50, 10),
    ("10", "Main St", "", 50, 10),
    ("9", "Oak St", "", 150, 320),
    ("10", "Oak St", "", 250, 320),
    ("142", "2nd Ave", "4", 20, -200),
]

SENSORS = {"z1": [lat_lon(e, n) for e in (-300, 300) for n in (-300, 300)]}


def addresses(rows: Iterable[tuple[str, str, str, float, float]] = ADDRESSES) -> AddressPoints:
    rows = list(rows)
    positions = [lat_lon(e, n) for *_, e, n in rows]
    return AddressPoints(
        number=[r[0] for r in rows],
        street=[r[1] for r in rows],
        unit=[r[2] for r in rows],
        city=["Pittsburgh"] * len(rows),
        postcode=["15213"] * len(rows),
        lat=np.array([p[0] for p in positions]),
        lon=np.array([p[1] for p in positions]),
    )


def layers(version: str = "city-1") -> Layers:
    return Layers(
        areas=[Area(layer, name, geom) for layer, name, geom in AREAS],
        addresses=addresses(),
        streets=[Street(name, geom) for name, geom in STREETS],
        sensors=SENSORS,
        version=version,
    )


def feature_collection(features: Iterable[tuple[dict[str, object], shapely.Geometry]]) -> bytes:
    return orjson.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": props, "geometry": shapely.geometry.mapping(g)}
                for props, g in features
            ],
        }
    )


def write_files(folder: Path) -> dict[str, Path]:
    """The city as a city publishes it: beats.geojson (BEAT), districts.geojson (DIST_NAME,
    with a population), streets.geojson (FULL_NAME, plus one unnamed alley) and
    addresses.csv (HOUSE_NO, ST_NAME + ST_TYPE, APT, MUNI, ZIP, X, Y)."""
    paths = {
        name: folder / name
        for name in ("beats.geojson", "districts.geojson", "streets.geojson", "addresses.csv")
    }
    paths["beats.geojson"].write_bytes(
        feature_collection(({"BEAT": n}, g) for layer, n, g in AREAS if layer == "beat")
    )
    paths["districts.geojson"].write_bytes(
        feature_collection(
            ({"DIST_NAME": n, "population": 12000}, g)
            for layer, n, g in AREAS
            if layer == "district"
        )
    )
    alley = line((-100, -100), (-100, -50))
    paths["streets.geojson"].write_bytes(
        feature_collection(
            [*(({"FULL_NAME": n}, g) for n, g in STREETS), ({"FULL_NAME": ""}, alley)]
        )
    )
    lines = ["HOUSE_NO,ST_NAME,ST_TYPE,APT,MUNI,ZIP,X,Y"]
    for number, street, unit, east, north in ADDRESSES:
        lat, lon = lat_lon(east, north)
        name, kind = street.rsplit(" ", 1)
        lines.append(f"{number},{name},{kind},{unit},Pittsburgh,15213,{lon!r},{lat!r}")
    lines.append("99,,,,Pittsburgh,15213,,")  # no street, no position: skipped
    paths["addresses.csv"].write_text("\n".join(lines) + "\n")
    return paths
