"""WGS84 <-> local tangent plane (east, north, up) in metres.

Pure and vectorised. The plane is tangent at an origin near the array (a zone's centroid),
so coordinates stay small and well conditioned: real positions sit kilometres from any
global origin, and a solver working in ECEF or degrees loses precision.

Uses the exact WGS84 ellipsoid (geodetic -> ECEF -> ENU), good to millimetres within tens of
kilometres of the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

_A = 6378137.0  # WGS84 semi-major axis, m
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)


def geodetic_to_ecef(lat: ArrayLike, lon: ArrayLike, alt: ArrayLike = 0.0) -> NDArray:
    """Geodetic (degrees, metres) -> Earth-centred, Earth-fixed metres, shape (..., 3).

    ECEF is a rigid transform away from every local frame: distances computed here equal
    those in any frame's ENU, and :meth:`LocalFrame.ecef_to_enu` turns cached ECEF points
    into a frame's coordinates without the trigonometry.
    """
    if type(lat) is float and type(lon) is float and type(alt) in (float, int):
        # One point (a sensor's position, a frame's origin): plain floats cost a tenth of
        # numpy's array machinery, and every scalar caller gets the same bits.
        phi, lam = math.radians(lat), math.radians(lon)
        sin_phi, cos_phi = math.sin(phi), math.cos(phi)
        n = _A / math.sqrt(1 - _E2 * sin_phi**2)
        return np.array(
            [
                (n + alt) * cos_phi * math.cos(lam),
                (n + alt) * cos_phi * math.sin(lam),
                (n * (1 - _E2) + alt) * sin_phi,
            ]
        )
    lat, lon, alt = np.broadcast_arrays(
        np.asarray(lat, float), np.asarray(lon, float), np.asarray(alt, float)
    )
    phi, lam = np.radians(lat), np.radians(lon)
    sin_phi = np.sin(phi)
    n = _A / np.sqrt(1 - _E2 * sin_phi**2)
    x = (n + alt) * np.cos(phi) * np.cos(lam)
    y = (n + alt) * np.cos(phi) * np.sin(lam)
    z = (n * (1 - _E2) + alt) * sin_phi
    return np.stack([x, y, z], axis=-1)


def _ecef_to_geodetic(xyz: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    # Bowring's method with two refinements: sub-millimetre for terrestrial heights.
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lon = np.arctan2(y, x)
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1 - _E2))
    for _ in range(4):
        n = _A / np.sqrt(1 - _E2 * np.sin(lat) ** 2)
        alt = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1 - _E2 * n / (n + alt)))
    n = _A / np.sqrt(1 - _E2 * np.sin(lat) ** 2)
    alt = p / np.cos(lat) - n
    return np.degrees(lat), np.degrees(lon), alt


@dataclass(frozen=True)
class LocalFrame:
    """A local east-north-up frame tangent to the ellipsoid at (lat0, lon0, alt0)."""

    lat0: float
    lon0: float
    alt0: float = 0.0

    @cached_property
    def _rotation(self) -> NDArray:
        phi, lam = np.radians(self.lat0), np.radians(self.lon0)
        sp, cp, sl, cl = np.sin(phi), np.cos(phi), np.sin(lam), np.cos(lam)
        return np.array(
            [
                [-sl, cl, 0.0],
                [-sp * cl, -sp * sl, cp],
                [cp * cl, cp * sl, sp],
            ]
        )

    @cached_property
    def _origin_ecef(self) -> NDArray:
        return geodetic_to_ecef(self.lat0, self.lon0, self.alt0)

    def to_enu(self, lat: ArrayLike, lon: ArrayLike, alt: ArrayLike = 0.0) -> NDArray:
        """Geodetic -> ENU metres. Shapes broadcast; returns (..., 3)."""
        return self.ecef_to_enu(geodetic_to_ecef(lat, lon, alt))

    def ecef_to_enu(self, xyz: ArrayLike) -> NDArray:
        """ECEF metres (..., 3) -> ENU metres (..., 3) in this frame."""
        return (np.asarray(xyz, float) - self._origin_ecef) @ self._rotation.T

    def to_geodetic(self, enu: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
        """ENU metres (..., 3) -> (lat, lon, alt) arrays."""
        enu_a = np.asarray(enu, float)
        if enu_a.shape[-1] == 2:
            enu_a = np.concatenate([enu_a, np.zeros((*enu_a.shape[:-1], 1))], axis=-1)
        xyz = enu_a @ self._rotation + self._origin_ecef
        return _ecef_to_geodetic(xyz)

    @classmethod
    def around(cls, lats: ArrayLike, lons: ArrayLike) -> LocalFrame:
        """A frame at the centroid of the given points (e.g. the sensors of one zone)."""
        return cls(float(np.mean(lats)), float(np.mean(lons)), 0.0)


def speed_of_sound(temperature_c: float) -> float:
    """Speed of sound in dry air, m/s: c = 331.3·√(1 + T/273.15)."""
    return 331.3 * math.sqrt(1.0 + temperature_c / 273.15)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (spherical Earth, mean radius): for distances only."""
    r = 6371008.8
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return float(2 * r * np.arcsin(np.sqrt(a)))
