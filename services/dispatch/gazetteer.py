"""Where a located incident is, in a dispatcher's words, from the city's own layers (pure).

:meth:`Gazetteer.build` turns loaded layers (:class:`Layers`: areas, address points, street
centrelines, and the sensors of every zone) into in-memory spatial indexes once;
:meth:`Gazetteer.describe` then answers one located point in well under a millisecond (it is
on the alert's path) with a :class:`Place`:

* ``areas``: per area layer (beat, district, ...), the name of the area containing the point;
* ``address``: the nearest address point, its distance and the compass bearing *from the
  address to the located point* ("142 Main St, 18 m NE" = the shots were 18 m north-east of
  142 Main St: where a unit sent to the address has to look);
* ``intersection``: the nearest point where two differently named centrelines meet or cross,
  the street nearer the located point named first ("Main St & 2nd Ave");
* ``outside_coverage``: whether the point lies outside the zone's array coverage.

Rules (each deterministic and independent of the order features were loaded in, so reloading
the same file gives the same words):

* **A point on an area boundary** (or in an overlap) belongs to the area whose interior
  contains it; when only boundaries touch it, to the lowest name (case-folded, then as
  written). Every layer names at most one area; a layer with no area at the point is absent.
* **Equidistant addresses**: distances are straight lines between WGS84 ellipsoid points
  (ECEF), exact for the few hundred metres that matter; points closer together than
  :data:`TIE_M` in distance are equally near, and the lowest of them in (street, house
  number as a number, number as written, unit, city, postcode) order wins.
* **Equidistant intersections**: the same tolerance, then the lowest pair of street names.
* **Coverage** of a zone is the convex hull of its active sensors, buffered by the median
  distance from each sensor to its nearest neighbour. Why: inside the hull the arrival-time
  hyperbolae of a TDOA fix cross at wide angles and the 95 % radius holds; beyond it the
  range along the bearing is ever less constrained (the dilution of precision grows with
  distance from the array), and one sensor spacing is the scale of the array itself, not a
  number fitted to any test. A zone with fewer than two known sensors has no coverage
  (``None``: unknown, not "outside").

With no area, address or street layer loaded, :meth:`Gazetteer.describe` returns ``None`` and
alerts are as they were without this module.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.spatial import cKDTree
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from shared.geo import LocalFrame, geodetic_to_ecef

#: Distances closer than this (metres) count as equal: address points are not surveyed
#: finer than centimetres, and float rounding of ECEF coordinates is far below it.
TIE_M = 0.01
COMPASS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
_NODE_DIGITS = 7  # centreline vertices closer than 1e-7 degree (~1 cm) are one node


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Area:
    """One named area of one layer (WGS84 lon/lat Polygon or MultiPolygon)."""

    layer: str
    name: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class AddressPoints:
    """Address points as columns (equal lengths): cheap to hold by the hundred thousand."""

    number: Sequence[str]
    street: Sequence[str]
    unit: Sequence[str]
    city: Sequence[str]
    postcode: Sequence[str]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.number)

    @classmethod
    def empty(cls) -> AddressPoints:
        return cls([], [], [], [], [], np.empty(0), np.empty(0))


@dataclass(frozen=True)
class Street:
    """One centreline feature (WGS84 lon/lat LineString or MultiLineString)."""

    name: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class Layers:
    """Everything :meth:`Gazetteer.build` needs. ``version`` names this state of the layers
    (it travels in every :class:`Place`, so an alert can be traced to the layers it used)."""

    areas: Sequence[Area] = ()
    addresses: AddressPoints = field(default_factory=AddressPoints.empty)
    streets: Sequence[Street] = ()
    #: zone -> (lat, lon) of its active sensors
    sensors: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    version: str = ""

    @property
    def has_city_layers(self) -> bool:
        return bool(self.areas) or len(self.addresses) > 0 or bool(self.streets)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AreaName:
    layer: str
    name: str


@dataclass(frozen=True)
class NearestAddress:
    number: str
    street: str
    unit: str
    city: str
    postcode: str
    lat: float
    lon: float
    distance_m: float
    #: compass bearing from the address point to the located point, degrees from true north
    bearing_deg: float

    @property
    def label(self) -> str:
        """``142 Main St`` (``142 Main St Unit 4`` with a unit)."""
        text = f"{self.number} {self.street}".strip()
        return f"{text} Unit {self.unit}" if self.unit else text

    @property
    def compass(self) -> str:
        return compass_point(self.bearing_deg)

    @property
    def text(self) -> str:
        """``142 Main St, 18 m NE``: the located point is 18 m north-east of the address."""
        metres = round(self.distance_m)
        if metres < 1:
            return f"{self.label}, <1 m"
        return f"{self.label}, {metres} m {self.compass}"


@dataclass(frozen=True)
class NearestIntersection:
    streets: tuple[str, str]  # the street nearer the located point first
    lat: float
    lon: float
    distance_m: float

    @property
    def text(self) -> str:
        return f"{self.streets[0]} & {self.streets[1]}"


@dataclass(frozen=True)
class Place:
    """The place words of one located point (JSON: :meth:`as_json` / :meth:`from_json`)."""

    areas: tuple[AreaName, ...]  # one per layer that has an area at the point, by layer
    address: NearestAddress | None
    intersection: NearestIntersection | None
    outside_coverage: bool | None  # None: the zone's coverage is unknown
    layers_version: str

    @property
    def areas_text(self) -> str:
        """``beat 12, district 3`` (empty when no area contains the point)."""
        return ", ".join(f"{a.layer} {a.name}" for a in self.areas)

    @property
    def text(self) -> str:
        """The short address line: ``142 Main St, 18 m NE · near Main St & 2nd Ave``, with
        ``OUTSIDE ARRAY COVERAGE`` in front when the point is outside it."""
        parts = []
        if self.outside_coverage:
            parts.append("OUTSIDE ARRAY COVERAGE")
        if self.address is not None:
            parts.append(self.address.text)
        if self.intersection is not None:
            parts.append(f"near {self.intersection.text}")
        if not parts and self.areas:
            parts.append(self.areas_text)
        return " · ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The JSON stored with the incident version and sent in the native alert."""
        address = self.address
        crossing = self.intersection
        return {
            "text": self.text,
            "areas": [{"layer": a.layer, "name": a.name} for a in self.areas],
            "address": None
            if address is None
            else {
                "number": address.number,
                "street": address.street,
                "unit": address.unit,
                "city": address.city,
                "postcode": address.postcode,
                "lat": address.lat,
                "lon": address.lon,
                "distance_m": address.distance_m,
                "bearing_deg": address.bearing_deg,
                "compass": address.compass,
                "text": address.text,
            },
            "intersection": None
            if crossing is None
            else {
                "streets": list(crossing.streets),
                "lat": crossing.lat,
                "lon": crossing.lon,
                "distance_m": crossing.distance_m,
                "text": crossing.text,
            },
            "outside_coverage": self.outside_coverage,
            "layers_version": self.layers_version,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Place:
        """Inverse of :meth:`as_json` (derived texts are recomputed, and equal)."""
        address = value.get("address")
        crossing = value.get("intersection")
        return cls(
            areas=tuple(AreaName(a["layer"], a["name"]) for a in value.get("areas", ())),
            address=None
            if address is None
            else NearestAddress(**{k: address[k] for k in NearestAddress.__dataclass_fields__}),
            intersection=None
            if crossing is None
            else NearestIntersection(
                streets=(crossing["streets"][0], crossing["streets"][1]),
                lat=crossing["lat"],
                lon=crossing["lon"],
                distance_m=crossing["distance_m"],
            ),
            outside_coverage=value.get("outside_coverage"),
            layers_version=value.get("layers_version", ""),
        )


def compass_point(bearing_deg: float) -> str:
    """8-point compass name of a bearing; a sector's lower edge belongs to it (22.5 -> NE)."""
    return COMPASS[int(((bearing_deg % 360.0) + 22.5) // 45.0) % 8]


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


def _ecef(lat: float, lon: float) -> NDArray[np.float64]:
    return geodetic_to_ecef(float(lat), float(lon), 0.0)


def _bearing_deg(from_lat: float, from_lon: float, delta_ecef: NDArray[np.float64]) -> float:
    """Bearing of an ECEF offset seen from (from_lat, from_lon): east/north in its tangent
    plane (exact, no spherical approximation)."""
    phi, lam = math.radians(from_lat), math.radians(from_lon)
    dx, dy, dz = (float(v) for v in delta_ecef)
    east = -math.sin(lam) * dx + math.cos(lam) * dy
    north = (
        -math.sin(phi) * math.cos(lam) * dx
        - math.sin(phi) * math.sin(lam) * dy
        + math.cos(phi) * dz
    )
    return math.degrees(math.atan2(east, north)) % 360.0


_NUMBER = re.compile(r"\s*(\d+)")


def _address_order(number: str, street: str, unit: str, city: str, postcode: str) -> tuple:
    match = _NUMBER.match(number)
    numeric = int(match.group(1)) if match else math.inf
    return (street.casefold(), street, numeric, number, unit, city, postcode)


@dataclass(frozen=True)
class _Coverage:
    frame: LocalFrame
    polygon: BaseGeometry  # ENU metres


def _coverage(sensors: Sequence[tuple[float, float]]) -> _Coverage | None:
    if len(sensors) < 2:
        return None
    lats = [s[0] for s in sensors]
    lons = [s[1] for s in sensors]
    frame = LocalFrame.around(lats, lons)
    xy = frame.to_enu(lats, lons)[:, :2]
    distances, _ = cKDTree(xy).query(xy, k=2)
    spacing = float(np.median(distances[:, 1]))
    hull = shapely.MultiPoint(xy).convex_hull.buffer(spacing)
    shapely.prepare(hull)
    return _Coverage(frame, hull)


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


class Gazetteer:
    """Immutable spatial indexes over one state of the layers. Thread-safe to read; build a
    new one to take a reload (the old one keeps answering until it is replaced)."""

    def __init__(self, layers: Layers) -> None:
        self.version = layers.version
        self.has_city_layers = layers.has_city_layers
        # Areas: one STR tree over every layer's polygons.
        self._areas = list(layers.areas)
        geoms = [a.geometry for a in self._areas]
        for g in geoms:
            shapely.prepare(g)
        self._area_tree = STRtree(geoms) if geoms else None
        # Address points: a k-d tree over their ECEF positions (true straight-line distances).
        self._addresses = layers.addresses
        self._address_tree = (
            cKDTree(geodetic_to_ecef(layers.addresses.lat, layers.addresses.lon))
            if len(layers.addresses)
            else None
        )
        # Intersections of the centrelines.
        self._build_intersections(layers.streets)
        self._coverage = {zone: _coverage(s) for zone, s in layers.sensors.items()}

    @classmethod
    def build(cls, layers: Layers) -> Gazetteer:
        return cls(layers)

    @property
    def intersection_count(self) -> int:
        return len(self._node_names)

    # -- intersections -----------------------------------------------------------------------

    def _build_intersections(self, streets: Sequence[Street]) -> None:
        named = [s for s in streets if s.name.strip()]
        self._street_names = [s.name for s in named]
        self._node_lonlat: list[tuple[float, float]] = []
        self._node_names: list[tuple[str, ...]] = []
        self._node_segments: list[tuple[int, ...]] = []
        self._node_tree: cKDTree | None = None
        if not named:
            return
        parts, owner = shapely.get_parts(
            np.array([s.geometry for s in named], dtype=object), return_index=True
        )
        self._part_owner = owner
        # The parts in a metric plane (equirectangular at the streets' mean latitude: enough
        # to tell which of two streets through one node is nearer), for naming the nearer first
        _, south, _, north = shapely.total_bounds(parts)
        self._plane_scale = math.cos(math.radians((south + north) / 2))
        self._street_parts_plane = shapely.transform(
            parts, lambda c: c * np.array([self._plane_scale, 1.0])
        )
        name_ids = {n: i for i, n in enumerate(sorted(set(self._street_names)))}
        part_name = np.array([name_ids[self._street_names[o]] for o in owner])
        left, right = STRtree(parts).query(parts, predicate="intersects")
        keep = (left < right) & (part_name[left] != part_name[right])
        left, right = left[keep], right[keep]
        crossings = shapely.intersection(parts[left], parts[right])
        points, pair = shapely.get_parts(crossings, return_index=True)
        is_point = shapely.get_type_id(points) == 0  # overlapping collinear runs are no crossing
        points, pair = points[is_point], pair[is_point]
        coords = shapely.get_coordinates(points)
        nodes: dict[tuple[int, int], tuple[tuple[float, float], set[int]]] = {}
        scale = 10**_NODE_DIGITS
        for (x, y), p in zip(coords.tolist(), pair.tolist(), strict=True):
            key = (round(x * scale), round(y * scale))
            entry = nodes.get(key)
            if entry is None:
                entry = nodes[key] = ((x, y), set())
            entry[1].update((int(left[p]), int(right[p])))
        for key in sorted(nodes):  # sorted: the same file gives the same node order
            (x, y), segs = nodes[key]
            self._node_lonlat.append((x, y))
            self._node_segments.append(tuple(sorted(segs)))
            self._node_names.append(tuple(sorted({self._street_names[owner[s]] for s in segs})))
        if not self._node_lonlat:
            return  # streets that never meet another name: no intersection to give
        lonlat = np.array(self._node_lonlat)
        self._node_tree = cKDTree(geodetic_to_ecef(lonlat[:, 1], lonlat[:, 0]))

    # -- lookups -----------------------------------------------------------------------------

    def describe(self, lat: float, lon: float, zone: str | None = None) -> Place | None:
        """The :class:`Place` of a located point, or None when no city layer is loaded."""
        if not self.has_city_layers:
            return None
        here = _ecef(lat, lon)
        return Place(
            areas=self.areas_at(lat, lon),
            address=self._nearest_address(lat, lon, here),
            intersection=self._nearest_intersection(lat, lon, here),
            outside_coverage=self.outside_coverage(lat, lon, zone),
            layers_version=self.version,
        )

    def areas_at(self, lat: float, lon: float) -> tuple[AreaName, ...]:
        if self._area_tree is None:
            return ()
        point = shapely.Point(lon, lat)
        hits = self._area_tree.query(point, predicate="intersects")
        by_layer: dict[str, list[Area]] = {}
        for i in hits.tolist():
            area = self._areas[i]
            by_layer.setdefault(area.layer, []).append(area)
        chosen = []
        for layer in sorted(by_layer):
            candidates = by_layer[layer]
            if len(candidates) > 1:
                candidates.sort(
                    key=lambda a: (not a.geometry.contains(point), a.name.casefold(), a.name)
                )
            chosen.append(AreaName(layer, candidates[0].name))
        return tuple(chosen)

    def _nearest_address(
        self, lat: float, lon: float, here: NDArray[np.float64]
    ) -> NearestAddress | None:
        tree = self._address_tree
        if tree is None:
            return None
        best, ties = _nearest_with_ties(tree, here)
        a = self._addresses
        if ties:
            best = min(
                ties,
                key=lambda i: _address_order(
                    a.number[i], a.street[i], a.unit[i], a.city[i], a.postcode[i]
                ),
            )
        at_lat, at_lon = float(a.lat[best]), float(a.lon[best])
        delta = here - tree.data[best]
        return NearestAddress(
            number=a.number[best],
            street=a.street[best],
            unit=a.unit[best],
            city=a.city[best],
            postcode=a.postcode[best],
            lat=at_lat,
            lon=at_lon,
            distance_m=round(math.hypot(*delta.tolist()), 1),
            bearing_deg=round(_bearing_deg(at_lat, at_lon, delta), 1) % 360.0,
        )

    def _nearest_intersection(
        self, lat: float, lon: float, here: NDArray[np.float64]
    ) -> NearestIntersection | None:
        tree = self._node_tree
        if tree is None:
            return None
        best, ties = _nearest_with_ties(tree, here)
        if ties:
            best = min(ties, key=lambda i: self._node_names[i])
        # Name the street nearer the located point first.
        segments = self._node_segments[best]
        point = shapely.Point(lon * self._plane_scale, lat)
        distances = shapely.distance(point, self._street_parts_plane[list(segments)]).tolist()
        per_name: dict[str, float] = {}
        for seg, d in zip(segments, distances, strict=True):
            name = self._street_names[self._part_owner[seg]]
            per_name[name] = min(d, per_name.get(name, math.inf))
        first, second = sorted(per_name, key=lambda n: (per_name[n], n))[:2]
        x, y = self._node_lonlat[best]
        return NearestIntersection(
            streets=(first, second),
            lat=round(y, 7),
            lon=round(x, 7),
            distance_m=round(math.hypot(*(here - tree.data[best]).tolist()), 1),
        )

    def outside_coverage(self, lat: float, lon: float, zone: str | None) -> bool | None:
        coverage = self._coverage.get(zone) if zone is not None else None
        if coverage is None:
            return None
        east, north, _ = coverage.frame.to_enu(float(lat), float(lon)).tolist()
        # a point intersects a polygon iff the polygon covers it (boundary included)
        return not bool(shapely.intersects_xy(coverage.polygon, east, north))


def _nearest_with_ties(tree: cKDTree, here: NDArray[np.float64]) -> tuple[int, list[int]]:
    """The nearest point's index, and every index as near within :data:`TIE_M` when there
    is more than one (else an empty list): one query in the common case."""
    if tree.n < 2:
        return 0, []
    distances, indices = tree.query(here, k=2)
    if distances[1] - distances[0] > TIE_M:
        return int(indices[0]), []
    ties = tree.query_ball_point(here, float(distances[0]) + TIE_M)
    return int(indices[0]), sorted(ties)


def layers_version(parts: Sequence[tuple[str, str, int]], sensors_signature: str) -> str:
    """A short name for one state of the layers: (kind, layer, version) rows + sensors."""
    digest = hashlib.sha256()
    for kind, layer, version in sorted(parts):
        digest.update(f"{kind}\0{layer}\0{version}\n".encode())
    digest.update(sensors_signature.encode())
    return digest.hexdigest()[:12]
