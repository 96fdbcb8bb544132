"""Reverse geocoding on a small synthetic city with known answers (see ``city.py``)."""

from __future__ import annotations

import dataclasses

import pytest
import shapely

from services.dispatch.gazetteer import (
    Area,
    AreaName,
    Gazetteer,
    Layers,
    Place,
    Street,
    compass_point,
)
from tests.unit.dispatch import city


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return Gazetteer(city.layers())


def describe(g: Gazetteer, east: float, north: float, zone: str | None = "z1") -> Place:
    place = g.describe(*city.lat_lon(east, north), zone)
    assert place is not None
    return place


# (east, north) -> the area names per layer. Beats A|B meet at east=0; D1 is the south half.
AREA_CASES = [
    ((-100, -100), (("beat", "A"), ("district", "D1"))),  # inside both layers
    ((100, 100), (("beat", "B"),)),  # north half: no district has it (layer absent)
    ((0, -100), (("beat", "A"), ("district", "D1"))),  # on the A|B boundary: lowest name
    ((-500, 0), (("beat", "A"), ("district", "D1"))),  # D1's corner, A's outer edge: both
    ((800, 800), ()),  # outside every area
]


@pytest.mark.parametrize(("where", "expected"), AREA_CASES)
def test_areas_containing_the_point(
    gazetteer: Gazetteer, where: tuple[float, float], expected: tuple[tuple[str, str], ...]
) -> None:
    assert describe(gazetteer, *where).areas == tuple(AreaName(*e) for e in expected)


def test_a_point_on_a_boundary_goes_to_the_area_whose_interior_holds_it() -> None:
    # Layer "sector": S-B is beat B (east of 0); S-A overlaps it up to a meridian 50 m east.
    # At 10 m east both interiors hold the point: the lowest name, S-A. On S-A's east edge
    # only S-B's interior holds it: S-B, though "S-A" sorts first.
    layers = city.layers()
    edge_lon = city.lat_lon(50, 0)[1]
    west_lon = city.lat_lon(-500, 0)[1]
    south, north = city.lat_lon(0, -500)[0], city.lat_lon(0, 500)[0]
    overlap = shapely.box(west_lon, south, edge_lon, north)
    areas = [
        *layers.areas,
        Area("sector", "S-B", layers.areas[0].geometry),
        Area("sector", "S-A", overlap),
    ]
    g = Gazetteer(dataclasses.replace(layers, areas=areas))
    assert AreaName("sector", "S-A") in describe(g, 10, 10).areas
    on_edge = g.describe(city.lat_lon(50, 10)[0], edge_lon, "z1")
    assert on_edge is not None and AreaName("sector", "S-B") in on_edge.areas


def test_nearest_address_with_distance_and_bearing_from_the_address(gazetteer: Gazetteer) -> None:
    place = describe(gazetteer, 20, -180)  # 20 m due north of 142 2nd Ave (20, -200)
    assert place.address is not None
    assert (place.address.number, place.address.street, place.address.unit) == (
        "142",
        "2nd Ave",
        "4",
    )
    assert place.address.distance_m == pytest.approx(20.0, abs=0.05)
    assert min(place.address.bearing_deg, 360 - place.address.bearing_deg) < 0.2
    assert place.address.text == "142 2nd Ave Unit 4, 20 m N"
    assert describe(gazetteer, 33, -187).address.text == "142 2nd Ave Unit 4, 18 m NE"


def test_equidistant_addresses_go_to_the_lowest_house_number_as_a_number(
    gazetteer: Gazetteer,
) -> None:
    # (0, 10) is 50 m from both 12 Main St (-50, 10) and 10 Main St (50, 10): "10" wins,
    # though "12" was loaded first.
    place = describe(gazetteer, 0, 10)
    assert place.address is not None and place.address.number == "10"
    assert place.address.text == "10 Main St, 50 m W"
    # (200, 320) is 50 m from 9 Oak St and 10 Oak St: 9 < 10 as numbers ("10" < "9" as text).
    assert describe(gazetteer, 200, 320).address.number == "9"
    # a metre off the midpoint, the nearer one wins whatever its number
    assert describe(gazetteer, -1, 10).address.number == "12"


def test_nearest_intersection_names_the_nearer_street_first(gazetteer: Gazetteer) -> None:
    on_main = describe(gazetteer, 30, 5)  # 5 m off Main St, 30 m off 2nd Ave
    assert on_main.intersection is not None
    assert on_main.intersection.streets == ("Main St", "2nd Ave")
    assert on_main.intersection.distance_m == pytest.approx(30.4, abs=0.1)
    assert describe(gazetteer, 5, 30).intersection.streets == ("2nd Ave", "Main St")
    # 3rd Ave crosses Main St and Oak St without a shared vertex: still intersections
    assert describe(gazetteer, 195, 10).intersection.text == "3rd Ave & Main St"
    assert describe(gazetteer, 210, 295).intersection.text == "Oak St & 3rd Ave"
    # as near to both streets: alphabetical
    assert describe(gazetteer, 210, 290).intersection.text == "3rd Ave & Oak St"


@pytest.mark.parametrize("west_name", ["Ave A", "Ave B"])
def test_equidistant_intersections_go_to_the_lowest_pair_of_names(west_name: str) -> None:
    # X St along north=0 is crossed by two avenues 100 m either side of the frame's meridian;
    # (0, 50) is equally far from both crossings, whichever avenue lies west.
    east_name = "Ave B" if west_name == "Ave A" else "Ave A"
    streets = [
        Street("X St", city.line((-300, 0), (300, 0))),
        Street(west_name, city.line((-100, -300), (-100, 300))),
        Street(east_name, city.line((100, -300), (100, 300))),
    ]
    g = Gazetteer(Layers(streets=streets, version="v"))
    crossing = describe(g, 0, 50).intersection
    assert crossing is not None and crossing.text == "X St & Ave A"


def test_same_named_segments_meeting_make_no_intersection(gazetteer: Gazetteer) -> None:
    # Main St is split at east=-200: the nearest intersection of (-200, 1) is 2nd & Main.
    assert describe(gazetteer, -200, 1).intersection.lon == pytest.approx(city.lat_lon(0, 0)[1])
    assert gazetteer.intersection_count == 4


@pytest.mark.parametrize(
    ("where", "outside"),
    [
        ((0, 0), False),  # inside the sensors' hull
        ((850, 0), False),  # outside the hull by 550 m < one sensor spacing (600 m)
        ((950, 0), True),  # beyond it
        ((800, 800), True),  # 707 m from the hull's corner
    ],
)
def test_coverage_is_the_sensor_hull_buffered_by_one_spacing(
    gazetteer: Gazetteer, where: tuple[float, float], outside: bool
) -> None:
    place = describe(gazetteer, *where)
    assert place.outside_coverage is outside
    assert place.text.startswith("OUTSIDE ARRAY COVERAGE") is outside


def test_coverage_of_an_unknown_zone_is_unknown(gazetteer: Gazetteer) -> None:
    assert describe(gazetteer, 0, 0, zone="elsewhere").outside_coverage is None
    lonely = {"z1": city.SENSORS["z1"][:1]}
    one_sensor = Gazetteer(dataclasses.replace(city.layers(), sensors=lonely))
    assert describe(one_sensor, 0, 0).outside_coverage is None


def test_no_city_layers_means_no_place() -> None:
    # sensors alone are no city layer: alerts stay as they were
    assert Gazetteer(Layers(sensors=city.SENSORS)).describe(40.44, -79.99, "z1") is None


def test_each_layer_alone() -> None:
    no_points = Layers().addresses
    only_areas = Gazetteer(dataclasses.replace(city.layers(), addresses=no_points, streets=()))
    place = describe(only_areas, -100, -100)
    assert place.address is None and place.intersection is None
    assert place.text == "beat A, district D1"


def test_place_json_round_trips_and_names_the_layers_version(gazetteer: Gazetteer) -> None:
    place = describe(gazetteer, 30, 5)
    assert Place.from_json(place.as_json()) == place
    assert place.as_json()["layers_version"] == "city-1"
    assert place.text == "10 Main St, 21 m W · near Main St & 2nd Ave"


@pytest.mark.parametrize(
    ("bearing", "name"),
    [(0, "N"), (22.4, "N"), (22.5, "NE"), (90, "E"), (200, "S"), (337.5, "N"), (359.9, "N")],
)
def test_compass_points(bearing: float, name: str) -> None:
    assert compass_point(bearing) == name


def test_streets_that_never_meet_another_name_give_no_intersection() -> None:
    lonely = [
        Street("Main St", city.line((-500, 0), (0, 0))),
        Street("Main St", city.line((0, 0), (500, 0))),
    ]
    place = describe(Gazetteer(Layers(streets=lonely, version="v")), 10, 10)
    assert place.intersection is None and place.text == ""
