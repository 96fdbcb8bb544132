"""Reading layer files as cities publish them, and refusing bad ones with a clear reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import shapely
import shapely.geometry

from services.dispatch.geofiles import (
    AddressColumns,
    csv_header,
    read_addresses,
    read_areas,
    read_streets,
)


def write_fc(path: Path, features: list[tuple[dict, dict | None]]) -> Path:
    path.write_bytes(
        orjson.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": p, "geometry": g} for p, g in features
                ],
            }
        )
    )
    return path


def square(x: float, y: float, size: float = 0.001) -> dict:
    return shapely.geometry.mapping(shapely.box(x, y, x + size, y + size))


def test_features_sharing_a_name_are_one_area_with_the_first_ones_attributes(
    tmp_path: Path,
) -> None:
    path = write_fc(
        tmp_path / "beats.geojson",
        [
            ({"BEAT": "12", "population": 900}, square(-79.99, 40.44)),
            ({"BEAT": "12", "population": 1}, square(-79.97, 40.44)),
            ({"BEAT": 7}, square(-79.95, 40.44)),  # a number as name: kept as text
        ],
    )
    areas = {a.name: a for a in read_areas(path, "BEAT")}
    assert sorted(areas) == ["12", "7"]
    assert areas["12"].geometry.geom_type == "MultiPolygon"
    assert areas["12"].attributes == {"population": 900}


def test_a_self_crossing_ring_is_repaired(tmp_path: Path) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[-80, 40], [-79.9, 40.1], [-79.9, 40], [-80, 40.1], [-80, 40]]],
    }
    (area,) = read_areas(write_fc(tmp_path / "a.geojson", [({"N": "x"}, bowtie)]), "N")
    assert area.geometry.is_valid and area.geometry.area > 0


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([({"OTHER": "x"}, square(-80, 40))], "feature 0: no property 'NAME'"),
        ([({"NAME": " "}, square(-80, 40))], "feature 0: property 'NAME' is empty"),
        ([({"NAME": "x"}, None)], "geometry must be one of Polygon, MultiPolygon, not None"),
        # state-plane feet, a common export mistake
        ([({"NAME": "x"}, square(1340000, 410000, 500))], "outside lon/lat range"),
    ],
)
def test_bad_area_files_name_the_feature_and_the_problem(
    tmp_path: Path, features: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        read_areas(write_fc(tmp_path / "a.geojson", features), "NAME")


def test_not_a_feature_collection(tmp_path: Path) -> None:
    path = tmp_path / "a.geojson"
    path.write_text('{"type": "Polygon"}')
    with pytest.raises(ValueError, match="not a GeoJSON FeatureCollection"):
        read_areas(path, "NAME")
    path.write_text("{nope")
    with pytest.raises(ValueError, match="not JSON"):
        read_areas(path, "NAME")


def test_unnamed_centrelines_are_left_out(tmp_path: Path) -> None:
    line = {"type": "LineString", "coordinates": [[-80, 40], [-80, 40.001]]}
    path = write_fc(
        tmp_path / "s.geojson",
        [({"FULL": "Main St "}, line), ({"FULL": ""}, line), ({"FULL": None}, line)],
    )
    assert [s.name for s in read_streets(path, "FULL")] == ["Main St"]


def test_missing_csv_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("HOUSE,STREET,X,Y\n1,Main St,-79.99,40.44\n")
    with pytest.raises(ValueError, match="no column 'number'"):
        csv_header(path, AddressColumns(street=("STREET",), lon="X", lat="Y"))
    with pytest.raises(ValueError, match="no column 'lon'"):
        csv_header(path, AddressColumns(number="HOUSE", street=("STREET",)))
    assert csv_header(
        path, AddressColumns(number="HOUSE", street=("STREET",), lon="X", lat="Y")
    ) == ["HOUSE", "STREET", "X", "Y"]
    path.write_text("a,a,lon,lat\n")
    with pytest.raises(ValueError, match="names a column twice"):
        csv_header(path, AddressColumns(number="a", street=("a",)))


def test_geojson_address_points_take_their_position_from_the_geometry(tmp_path: Path) -> None:
    path = write_fc(
        tmp_path / "a.geojson",
        [
            (
                {"number": "5", "street": "Main St", "unit": "2", "city": "Pgh", "postcode": "1"},
                {"type": "Point", "coordinates": [-79.99, 40.44]},
            )
        ],
    )
    (row,) = read_addresses(path, AddressColumns())
    assert row == ("5", "Main St", "2", "Pgh", "1", -79.99, 40.44)
