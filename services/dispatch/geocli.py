"""``shotline areas | addresses | streets``: load the city's own layers, list them, remove one.

* ``shotline areas load beats.geojson --layer beat --name-field BEAT``
* ``shotline addresses load points.csv --number HOUSE_NO --street ST_NAME,ST_TYPE --lon X --lat Y``
* ``shotline streets load centrelines.geojson --name-field FULL_NAME``
* ``shotline areas|addresses|streets list`` / ``remove LAYER``
* ``shotline places at --lat LAT --lon LON [--zone Z]``: the words an alert located there
  would carry

A load replaces that layer in one transaction; running dispatch instances take the new layer
within moments (``NOTIFY``) and keep answering from the old one meanwhile. Nothing leaves the
machine: no geocoding service is called.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.dispatch import geofiles, geostore
from services.dispatch.gazetteer import Gazetteer
from shared.cli import err, fail, operator_errors
from shared.runtime import with_database
from shared.schemas import is_identifier

areas_app = typer.Typer(
    help="Area layers (districts, beats, sectors, neighbourhoods).", no_args_is_help=True
)
addresses_app = typer.Typer(
    help="Address points (nearest address in alerts).", no_args_is_help=True
)
streets_app = typer.Typer(help="Street centrelines (nearest intersection).", no_args_is_help=True)
places_app = typer.Typer(help="What alerts say about a place.", no_args_is_help=True)

out = Console()

FileArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The layer file")
]


def _with_pool(action: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    return with_database(action)


def _check_layer(layer: str) -> None:
    if not is_identifier(layer):
        raise fail(f"--layer {layer!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")


def _list(kind: geostore.LayerKind) -> None:
    rows = _with_pool(lambda pool: geostore.list_layers(pool, kind))
    table = Table("layer", "features", "version", "loaded", "source")
    for r in rows:
        table.add_row(r.layer, str(r.features), str(r.version), r.loaded_at.isoformat(), r.source)
    out.print(table)


def _remove(kind: geostore.LayerKind, layer: str) -> None:
    if not _with_pool(lambda pool: geostore.remove_layer(pool, kind, layer)):
        raise fail(f"no {kind} layer {layer!r} is loaded")
    out.print(f"{kind} layer {layer} removed")


def _loaded(kind: str, layer: str, count: int, started: float) -> None:
    out.print(
        f"{kind} layer {layer}: {count} feature(s) loaded in {time.monotonic() - started:.1f} s"
    )


@areas_app.command("load")
@operator_errors
def areas_load(
    path: FileArg,
    layer: Annotated[str, typer.Option(help="Layer name, e.g. beat, district, neighbourhood")],
    name_field: Annotated[str, typer.Option(help="Property holding each area's name")],
) -> None:
    """Load (replace) an area layer from a GeoJSON FeatureCollection of polygons."""
    _check_layer(layer)
    started = time.monotonic()
    areas = geofiles.read_areas(path, name_field)
    count = _with_pool(lambda pool: geostore.replace_areas(pool, layer, areas, source=path.name))
    _loaded("area", layer, count, started)


@areas_app.command("list")
@operator_errors
def areas_list() -> None:
    """The loaded area layers."""
    _list("area")


@areas_app.command("remove")
@operator_errors
def areas_remove(layer: str) -> None:
    """Remove an area layer (alerts stop naming it)."""
    _remove("area", layer)


@streets_app.command("load")
@operator_errors
def streets_load(
    path: FileArg,
    name_field: Annotated[str, typer.Option(help="Property holding each street's name")],
    layer: Annotated[str, typer.Option(help="Layer name")] = "streets",
) -> None:
    """Load (replace) street centrelines from a GeoJSON FeatureCollection of LineStrings."""
    _check_layer(layer)
    started = time.monotonic()
    streets = geofiles.read_streets(path, name_field)
    count = _with_pool(
        lambda pool: geostore.replace_streets(pool, layer, streets, source=path.name)
    )
    _loaded("street", layer, count, started)


@streets_app.command("list")
@operator_errors
def streets_list() -> None:
    """The loaded centreline layers."""
    _list("street")


@streets_app.command("remove")
@operator_errors
def streets_remove(layer: str) -> None:
    """Remove a centreline layer."""
    _remove("street", layer)


@addresses_app.command("load")
@operator_errors
def addresses_load(
    path: FileArg,
    layer: Annotated[str, typer.Option(help="Layer name")] = "addresses",
    number: Annotated[str, typer.Option(help="Column of the house number")] = "number",
    street: Annotated[
        str, typer.Option(help="Column(s) of the street name, comma-separated to join")
    ] = "street",
    unit: Annotated[str, typer.Option(help="Column of the unit ('' for none)")] = "unit",
    city: Annotated[str, typer.Option(help="Column of the city ('' for none)")] = "city",
    postcode: Annotated[
        str, typer.Option(help="Column of the postcode ('' for none)")
    ] = "postcode",
    lon: Annotated[str, typer.Option(help="Column of the longitude (WGS84)")] = "lon",
    lat: Annotated[str, typer.Option(help="Column of the latitude (WGS84)")] = "lat",
) -> None:
    """Load (replace) address points from a CSV (header row) or a GeoJSON of Points.

    Rows with a blank street or position are skipped and counted.
    """
    _check_layer(layer)
    columns = geofiles.AddressColumns(
        number=number,
        street=tuple(c.strip() for c in street.split(",") if c.strip()),
        unit=unit or None,
        city=city or None,
        postcode=postcode or None,
        lon=lon,
        lat=lat,
    )
    if not columns.street:
        raise fail("--street must name at least one column")
    started = time.monotonic()
    # A bad row names its line (or feature) and leaves the loaded layer as it was.
    if geofiles.is_csv(path):
        loaded = _with_pool(
            lambda pool: geostore.replace_addresses_csv(
                pool, layer, path, columns, source=path.name
            )
        )
        count, skipped = loaded.kept, loaded.skipped
    else:
        report = geofiles.AddressReport()
        rows = list(geofiles.read_addresses(path, columns, report))
        count = _with_pool(
            lambda pool: geostore.replace_addresses(pool, layer, rows, source=path.name)
        )
        skipped = report.skipped
    _loaded("address", layer, count, started)
    if skipped:
        err.print(f"{skipped} row(s) skipped: blank street or position")


@addresses_app.command("list")
@operator_errors
def addresses_list() -> None:
    """The loaded address layers."""
    _list("address")


@addresses_app.command("remove")
@operator_errors
def addresses_remove(layer: str) -> None:
    """Remove an address layer."""
    _remove("address", layer)


@places_app.command("at")
@operator_errors
def places_at(
    lat: Annotated[float, typer.Option(help="Latitude, WGS84", min=-90, max=90)],
    lon: Annotated[float, typer.Option(help="Longitude, WGS84", min=-180, max=180)],
    zone: Annotated[str | None, typer.Option(help="Zone (for the coverage check)")] = None,
) -> None:
    """Print the place words an alert located there would carry, from the loaded layers."""

    async def _go(pool: asyncpg.Pool) -> Any:
        layers = await geostore.read_layers(pool)
        return Gazetteer(layers).describe(lat, lon, zone)

    place = _with_pool(_go)
    if place is None:
        raise fail("no area, address or street layer is loaded: alerts carry no place words")
    out.print(place.text or "(nothing near)", highlight=False, markup=False)
    print(orjson.dumps(place.as_json(), option=orjson.OPT_INDENT_2).decode())
