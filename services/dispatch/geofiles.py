"""Reading the city's layer files (pure parsing: no database).

* Areas and street centrelines: GeoJSON ``FeatureCollection`` s (RFC 7946, lon/lat), one
  property naming each feature.
* Address points: CSV (a header row; its rows are parsed by PostgreSQL's ``COPY``, see
  :func:`csv_header`) or GeoJSON ``Point`` features, with a column mapping
  (:class:`AddressColumns`) because every city names its columns differently.

Every problem is a ``ValueError`` naming the file, the feature or line, and the field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

_POLYGONAL = ("Polygon", "MultiPolygon")
_LINEAR = ("LineString", "MultiLineString")


@dataclass(frozen=True)
class AreaFeature:
    name: str
    geometry: BaseGeometry  # Polygon / MultiPolygon, lon/lat
    attributes: dict[str, Any]  # the other properties of its (first) feature


@dataclass(frozen=True)
class StreetFeature:
    name: str
    geometry: BaseGeometry  # LineString / MultiLineString, lon/lat


@dataclass(frozen=True)
class AddressColumns:
    """Which column (or property) holds each part of an address. ``street`` may name several
    columns joined by spaces (``"ST_PREFIX ST_NAME ST_TYPE"`` split from a comma list)."""

    number: str = "number"
    street: tuple[str, ...] = ("street",)
    unit: str | None = "unit"
    city: str | None = "city"
    postcode: str | None = "postcode"
    lon: str = "lon"
    lat: str = "lat"


class AddressRow(NamedTuple):
    """One address point (a tuple: hundreds of thousands are held while a file is read)."""

    number: str
    street: str
    unit: str
    city: str
    postcode: str
    lon: float
    lat: float


def _features(path: Path) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ValueError(f"{path}: not a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise ValueError(f"{path}: FeatureCollection without a 'features' list")
    return features


def _name_of(feature: Any, name_field: str, where: str) -> str:
    props = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(props, dict) or name_field not in props:
        raise ValueError(f"{where}: no property {name_field!r} (the --name-field)")
    value = props[name_field]
    if value is None or str(value).strip() == "":
        raise ValueError(f"{where}: property {name_field!r} is empty")
    return str(value).strip()


def _geometry_of(feature: dict[str, Any], kinds: tuple[str, ...], where: str) -> BaseGeometry:
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in kinds:
        got = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise ValueError(f"{where}: geometry must be one of {', '.join(kinds)}, not {got!r}")
    try:
        geom = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{where}: bad {geometry['type']} coordinates ({exc})") from None
    if geom.is_empty:
        raise ValueError(f"{where}: empty geometry")
    west, south, east, north = geom.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise ValueError(f"{where}: coordinates outside lon/lat range (GeoJSON is lon, lat)")
    return geom


def read_areas(path: Path, name_field: str) -> list[AreaFeature]:
    """One :class:`AreaFeature` per distinct name (features sharing a name are one area:
    their polygons are merged); invalid rings are repaired (``make_valid``)."""
    by_name: dict[str, tuple[list[BaseGeometry], dict[str, Any]]] = {}
    for i, feature in enumerate(_features(path)):
        where = f"{path}: feature {i}"
        name = _name_of(feature, name_field, where)
        geom = _geometry_of(feature, _POLYGONAL, where)
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        entry = by_name.setdefault(
            name,
            ([], {k: v for k, v in feature["properties"].items() if k != name_field}),
        )
        entry[0].append(geom)
    out = []
    for name, (geoms, attributes) in by_name.items():
        merged = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
        polygons = [
            # twice: make_valid may nest a MultiPolygon in a GeometryCollection
            g
            for g in shapely.get_parts(shapely.get_parts(merged))
            if g.geom_type == "Polygon" and not g.is_empty
        ]
        if not polygons:
            raise ValueError(f"{path}: area {name!r} has no polygon area")
        geom = polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)
        out.append(AreaFeature(name, geom, attributes))
    return out


def read_streets(path: Path, name_field: str) -> list[StreetFeature]:
    """Centreline features; a feature with an empty name (unnamed alleys, ramps) is kept out:
    it can name no intersection."""
    out = []
    for i, feature in enumerate(_features(path)):
        where = f"{path}: feature {i}"
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or name_field not in props:
            raise ValueError(f"{where}: no property {name_field!r} (the --name-field)")
        if props[name_field] is None or str(props[name_field]).strip() == "":
            continue
        geometry = _geometry_of(feature, _LINEAR, where)
        out.append(StreetFeature(str(props[name_field]).strip(), geometry))
    return out


def _coordinate(value: Any, column: str, low: float, high: float, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {column!r} is not a number: {value!r}") from None
    if not (low <= number <= high) or math.isnan(number):
        raise ValueError(f"{where}: column {column!r} = {number} is outside [{low}, {high}]")
    return number


def _text(row: Mapping[str, Any], column: str | None) -> str:
    if column is None:
        return ""
    value = row.get(column)
    return "" if value is None else str(value).strip()


class AddressReport:
    """Counts of one read (rows kept, rows skipped for a blank street or position)."""

    def __init__(self) -> None:
        self.kept = 0
        self.skipped = 0


def _rows_of(
    records: Iterable[tuple[str, Mapping[str, Any]]], columns: AddressColumns, report: AddressReport
) -> Iterator[AddressRow]:
    for where, row in records:
        street = " ".join(p for p in (_text(row, c) for c in columns.street) if p)
        lon_raw, lat_raw = row.get(columns.lon), row.get(columns.lat)
        if not street or lon_raw in (None, "") or lat_raw in (None, ""):
            report.skipped += 1
            continue
        report.kept += 1
        yield AddressRow(
            number=_text(row, columns.number),
            street=street,
            unit=_text(row, columns.unit),
            city=_text(row, columns.city),
            postcode=_text(row, columns.postcode),
            lon=_coordinate(lon_raw, columns.lon, -180, 180, where),
            lat=_coordinate(lat_raw, columns.lat, -90, 90, where),
        )


def _check_columns(path: Path, present: Iterable[str], columns: AddressColumns) -> None:
    # unit, city and postcode are optional: a city that does not publish one leaves it blank
    have = set(present)
    missing = [c for c in (columns.number, *columns.street) if c not in have]
    if missing:
        raise ValueError(
            f"{path}: no column {', '.join(map(repr, missing))} "
            f"(map yours with --number/--street/...; the file has {', '.join(sorted(have))})"
        )


def is_csv(path: Path) -> bool:
    """CSV unless the name says GeoJSON (``.geojson`` / ``.json``)."""
    return path.suffix.lower() not in (".geojson", ".json")


def csv_header(path: Path, columns: AddressColumns) -> list[str]:
    """The header row of an address CSV, checked against the mapping (ValueError naming
    what is missing). The rows themselves are parsed by PostgreSQL's ``COPY``
    (:func:`services.dispatch.geostore.replace_addresses_csv`)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise ValueError(f"{path}: empty CSV (a header row is needed)")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}: the header names a column twice")
    _check_columns(path, [*header, columns.lon, columns.lat], columns)
    for needed in (columns.lon, columns.lat):
        if needed not in header:
            raise ValueError(f"{path}: no column {needed!r} (map it with --lon/--lat)")
    return header


def check_coordinates(lon: str, lat: str, columns: AddressColumns, where: str) -> None:
    """Raise the ValueError that names the bad coordinate of a row (no-op if both are good)."""
    _coordinate(lon, columns.lon, -180, 180, where)
    _coordinate(lat, columns.lat, -90, 90, where)


def read_addresses(
    path: Path, columns: AddressColumns, report: AddressReport | None = None
) -> Iterator[AddressRow]:
    """Address rows from a GeoJSON of Points, by property names (the position from the
    geometry unless ``lon``/``lat`` properties are mapped and present). A row with a blank
    street or position is skipped (counted in ``report``)."""
    report = report if report is not None else AddressReport()
    features = _features(path)
    records = []
    for i, feature in enumerate(features):
        where = f"{path}: feature {i}"
        props = dict(feature.get("properties") or {})
        geometry = feature.get("geometry") or {}
        if (
            columns.lon not in props
            and isinstance(geometry, dict)
            and geometry.get("type") == "Point"
        ):
            coords = geometry.get("coordinates") or [None, None]
            props[columns.lon], props[columns.lat] = coords[0], coords[1]
        records.append((where, props))
    if features:
        _check_columns(path, records[0][1].keys(), columns)
    yield from _rows_of(records, columns, report)
