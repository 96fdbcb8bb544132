"""The local tangent plane: exact round trips and true distances near the origin."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shared.geo import LocalFrame, geodetic_to_ecef, haversine_m, speed_of_sound

FRAME = LocalFrame(40.4406, -79.9959, 0.0)


@given(
    st.floats(-0.2, 0.2), st.floats(-0.2, 0.2), st.floats(-50, 500)
)  # within ~20 km of the origin
def test_round_trip_is_sub_millimetre(dlat: float, dlon: float, alt: float) -> None:
    lat, lon = 40.4406 + dlat, -79.9959 + dlon
    enu = FRAME.to_enu(lat, lon, alt)
    back = FRAME.to_geodetic(enu)
    assert abs(back[0] - lat) < 1e-8 and abs(back[1] - lon) < 1e-8 and abs(back[2] - alt) < 1e-3


def test_east_north_up_axes_and_scale() -> None:
    east = FRAME.to_enu(40.4406, -79.9959 + 0.01)
    north = FRAME.to_enu(40.4406 + 0.01, -79.9959)
    assert east[0] > 840 and abs(east[1]) < 1  # 0.01° of longitude at 40° N ≈ 848 m east
    assert north[1] > 1100 and abs(north[0]) < 1e-6  # 0.01° of latitude ≈ 1110 m north
    d = float(np.hypot(*north[:2]))
    assert abs(d - haversine_m(40.4406, -79.9959, 40.4506, -79.9959)) < 3  # sphere vs ellipsoid


@given(
    st.lists(st.tuples(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2), st.floats(-50, 500)),
             min_size=2, max_size=6)
)
def test_cached_ecef_gives_the_same_enu_and_the_same_distances(
    offsets: list[tuple[float, float, float]],
) -> None:
    # The locator converts each sensor position to ECEF once and derives every frame's ENU
    # (and straight-line distances) from it: that must be the frame's own answer.
    lat = np.array([40.4406 + o[0] for o in offsets])
    lon = np.array([-79.9959 + o[1] for o in offsets])
    alt = np.array([o[2] for o in offsets])
    ecef = geodetic_to_ecef(lat, lon, alt)
    assert np.allclose(FRAME.ecef_to_enu(ecef), FRAME.to_enu(lat, lon, alt), atol=1e-9)
    enu = FRAME.to_enu(lat, lon, alt)
    assert np.allclose(
        np.linalg.norm(ecef - ecef[0], axis=1), np.linalg.norm(enu - enu[0], axis=1), atol=1e-6
    )


@given(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2), st.floats(-50, 500))
def test_one_point_and_an_array_of_points_convert_alike(
    dlat: float, dlon: float, alt: float
) -> None:
    lat, lon = 40.4406 + dlat, -79.9959 + dlon
    one = geodetic_to_ecef(lat, lon, alt)  # plain floats: the scalar path
    many = geodetic_to_ecef(np.array([lat, lat]), np.array([lon, lon]), np.array([alt, alt]))
    assert one.shape == (3,) and np.allclose(many, one, rtol=0, atol=1e-6)


def test_speed_of_sound_formula() -> None:
    assert speed_of_sound(0.0) == 331.3
    assert abs(speed_of_sound(20.0) - 343.2) < 0.1
