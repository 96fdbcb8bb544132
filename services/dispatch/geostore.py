"""The city's layers in PostgreSQL: load (replace) a layer, list them, read them all back.

* A load replaces one layer in one transaction (delete its rows, ``COPY`` the new ones, bump
  its version): readers see the old layer or the new one, never a mix, and nothing waits
  for the load (plain ``DELETE``, no ``TRUNCATE`` lock). It ends with a ``NOTIFY`` on
  :data:`NOTIFY_CHANNEL` so running dispatch instances rebuild their index at once.
* :func:`read_layer_rows` reads every layer and the zones' active sensors in one
  repeatable-read snapshot, with the version naming that snapshot; :func:`to_layers` turns
  them into the gazetteer's input (:func:`read_layers` does both).

Raises asyncpg errors on database failures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import numpy as np
import orjson
import shapely

from services.dispatch import geofiles
from services.dispatch.gazetteer import AddressPoints, Area, Layers, Street, layers_version
from services.dispatch.geofiles import AddressColumns, AddressRow, AreaFeature, StreetFeature

LayerKind = Literal["area", "address", "street"]
NOTIFY_CHANNEL = "shotline_geo_layers"
_TABLES = {"area": "geo_areas", "address": "geo_address_points", "street": "geo_streets"}

Conn = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class LayerRow:
    kind: str
    layer: str
    version: int
    features: int
    source: str
    loaded_at: datetime


async def _replace(
    pool: asyncpg.Pool,
    kind: LayerKind,
    layer: str,
    source: str,
    columns: Sequence[str],
    records: Iterable[tuple[object, ...]],
) -> int:
    table = _TABLES[kind]
    async with pool.acquire() as conn, conn.transaction():
        # One load of a layer at a time (a second waits, then replaces the first's result).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"geo:{kind}:{layer}")
        await conn.execute(f"DELETE FROM {table} WHERE layer = $1", layer)
        result = await conn.copy_records_to_table(
            table, records=records, columns=["layer", *columns]
        )
        count = int(result.split()[-1])
        await _record_layer(conn, kind, layer, count, source)
    return count


async def replace_areas(
    pool: asyncpg.Pool, layer: str, areas: Sequence[AreaFeature], *, source: str
) -> int:
    """Replace area layer ``layer``; returns the number of areas stored."""
    return await _replace(
        pool,
        "area",
        layer,
        source,
        ["name", "geometry", "attributes"],
        (
            (layer, a.name, shapely.to_wkb(a.geometry), orjson.dumps(a.attributes).decode())
            for a in areas
        ),
    )


async def replace_streets(
    pool: asyncpg.Pool, layer: str, streets: Sequence[StreetFeature], *, source: str
) -> int:
    """Replace centreline layer ``layer``; returns the number of features stored."""
    return await _replace(
        pool,
        "street",
        layer,
        source,
        ["name", "geometry"],
        ((layer, s.name, shapely.to_wkb(s.geometry)) for s in streets),
    )


async def replace_addresses(
    pool: asyncpg.Pool, layer: str, rows: Iterable[AddressRow], *, source: str
) -> int:
    """Replace address layer ``layer`` (``COPY``: hundreds of thousands of rows in seconds)."""
    return await _replace(
        pool,
        "address",
        layer,
        source,
        ["number", "street", "unit", "city", "postcode", "lon", "lat"],
        ((layer, r.number, r.street, r.unit, r.city, r.postcode, r.lon, r.lat) for r in rows),
    )


#: A decimal number as PostgreSQL's float8 reads it (checked before any cast: a cast that
#: fails would abort the load without naming the row)
_NUMBER_RE = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,3})?$"


@dataclass(frozen=True)
class AddressLoad:
    kept: int
    skipped: int  # rows with a blank street or position


async def replace_addresses_csv(
    pool: asyncpg.Pool,
    layer: str,
    path: Path,
    columns: AddressColumns,
    *,
    source: str,
) -> AddressLoad:
    """Replace address layer ``layer`` from a CSV file, parsed by PostgreSQL's ``COPY`` into
    a staging table and mapped by one ``INSERT … SELECT`` (hundreds of thousands of rows in
    seconds). Rows with a blank street or position are skipped; a coordinate that is
    not a number in range is a ``ValueError`` naming its line and column, and the loaded
    layer stays as it was (one transaction)."""
    header = geofiles.csv_header(path, columns)
    staged = [f"c{i}" for i in range(len(header))]
    # an unquoted empty CSV field is NULL to COPY: blank, as in the rest of the rules
    col = {name: f"coalesce(btrim(c{i}), '')" for i, name in enumerate(header)}

    def text(name: str | None) -> str:
        return col[name] if name is not None and name in col else "''"

    street = "concat_ws(' ', " + ", ".join(f"NULLIF({col[c]}, '')" for c in columns.street) + ")"
    lon, lat = col[columns.lon], col[columns.lat]
    usable = f"{street} <> '' AND {lon} <> '' AND {lat} <> ''"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE geo_address_staging (line bigserial, "
            + ", ".join(f"{c} text" for c in staged)
            + ") ON COMMIT DROP"
        )
        try:
            await conn.copy_to_table(
                "geo_address_staging",
                source=_non_blank_lines(path),
                columns=staged,
                format="csv",
                header=True,
                encoding="UTF8",
            )
        except (asyncpg.DataError, asyncpg.BadCopyFileFormatError) as exc:
            where = getattr(exc, "context", None) or ""
            raise ValueError(f"{path}: not a CSV PostgreSQL can read: {exc} ({where})") from None
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"geo:address:{layer}")
        await conn.execute("DELETE FROM geo_address_points WHERE layer = $1", layer)
        try:
            # Plain casts, checked by the table's range constraints: the fast path. Only when
            # it fails is the slower search for the first bad row run, to name it.
            async with conn.transaction():  # a savepoint: the search runs after a failure
                status = await conn.execute(
                    f"""INSERT INTO geo_address_points
                          (layer, number, street, unit, city, postcode, lon, lat)
                        SELECT $1, {text(columns.number)}, {street}, {text(columns.unit)},
                               {text(columns.city)}, {text(columns.postcode)},
                               {lon}::float8, {lat}::float8
                        FROM geo_address_staging WHERE {usable}""",
                    layer,
                )
        except (asyncpg.DataError, asyncpg.CheckViolationError):
            await _name_bad_coordinate(conn, path, columns, usable, lon, lat)
            raise
        kept = int(status.split()[-1])
        total = await conn.fetchval("SELECT count(*) FROM geo_address_staging")
        await _record_layer(conn, "address", layer, int(kept), source)
    return AddressLoad(kept=int(kept), skipped=int(total) - int(kept))


async def _name_bad_coordinate(
    conn: asyncpg.Connection,
    path: Path,
    columns: AddressColumns,
    usable: str,
    lon: str,
    lat: str,
) -> None:
    """Raise the ValueError naming the first staged row whose coordinates do not read as
    numbers in range (returns if it finds none: the caller re-raises the database's error)."""
    bad = await conn.fetchrow(
        f"""SELECT line, {lon} AS lon, {lat} AS lat FROM geo_address_staging
            WHERE {usable} AND NOT (
              CASE WHEN {lon} ~ $1 AND {lat} ~ $1
                   THEN {lon}::numeric BETWEEN -180 AND 180
                        AND {lat}::numeric BETWEEN -90 AND 90
                   ELSE false END)
            ORDER BY line LIMIT 1""",
        _NUMBER_RE,
    )
    if bad is not None:
        # line 1 is the header (a quoted field spanning lines would shift the count)
        where = f"{path}: line {bad['line'] + 1}"
        geofiles.check_coordinates(bad["lon"], bad["lat"], columns, where)
        raise ValueError(f"{where}: coordinates out of range")


async def _non_blank_lines(path: Path) -> AsyncIterator[bytes]:
    """The file in chunks of about 1 MiB without its blank lines (a trailing empty line is
    common in exported CSVs, and COPY would refuse it as a row with missing columns)."""
    with path.open("rb") as handle:
        chunk: list[bytes] = []
        size = 0
        for line in handle:
            if line.strip():
                chunk.append(line)
                size += len(line)
                if size >= 1 << 20:
                    yield b"".join(chunk)
                    chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)


async def _record_layer(
    conn: asyncpg.Connection, kind: LayerKind, layer: str, count: int, source: str
) -> None:
    await conn.execute(
        """INSERT INTO geo_layers (kind, layer, features, source) VALUES ($1, $2, $3, $4)
           ON CONFLICT (kind, layer) DO UPDATE SET
             version = nextval('geo_layer_version'), features = EXCLUDED.features,
             source = EXCLUDED.source, loaded_at = now()""",
        kind,
        layer,
        count,
        source,
    )
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


async def remove_layer(pool: asyncpg.Pool, kind: LayerKind, layer: str) -> bool:
    """Drop one layer (its features and its row); False if it was not loaded."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"DELETE FROM {_TABLES[kind]} WHERE layer = $1", layer)
        gone = await conn.fetchval(
            "DELETE FROM geo_layers WHERE kind = $1 AND layer = $2 RETURNING 1", kind, layer
        )
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return gone is not None


async def list_layers(conn: Conn, kind: LayerKind | None = None) -> list[LayerRow]:
    rows = await conn.fetch(
        """SELECT kind, layer, version, features, source, loaded_at FROM geo_layers
           WHERE ($1::text IS NULL OR kind = $1) ORDER BY kind, layer""",
        kind,
    )
    return [LayerRow(**dict(r)) for r in rows]


_SENSORS_SIGNATURE = """SELECT count(*)::text || ':' || coalesce(md5(string_agg(
                          sensor_id || '|' || zone || '|' || lat || '|' || lon, ','
                          ORDER BY sensor_id)), '')
                        FROM sensors WHERE status = 'active'"""


async def signature(conn: Conn) -> str:
    """The version :func:`read_layers` would return now (cheap: no feature is read)."""
    rows = await conn.fetch("SELECT kind, layer, version FROM geo_layers")
    sensors = await conn.fetchval(_SENSORS_SIGNATURE)
    return layers_version([(r["kind"], r["layer"], r["version"]) for r in rows], sensors)


@dataclass(frozen=True)
class LayerRows:
    """The rows :func:`read_layer_rows` read, before any conversion (see :func:`to_layers`)."""

    version: str
    areas: list[asyncpg.Record]
    streets: list[asyncpg.Record]
    addresses: list[asyncpg.Record]
    sensors: list[asyncpg.Record]


async def read_layer_rows(pool: asyncpg.Pool) -> LayerRows:
    """Every loaded layer and every zone's active sensors, from one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return LayerRows(
            version=await signature(conn),
            areas=await conn.fetch(
                "SELECT layer, name, geometry FROM geo_areas ORDER BY layer, name"
            ),
            streets=await conn.fetch("SELECT name, geometry FROM geo_streets"),
            addresses=await conn.fetch(
                "SELECT number, street, unit, city, postcode, lat, lon FROM geo_address_points"
            ),
            sensors=await conn.fetch(
                "SELECT zone, lat, lon FROM sensors WHERE status = 'active' ORDER BY sensor_id"
            ),
        )


def to_layers(rows: LayerRows) -> Layers:
    """The rows as :class:`Layers` (CPU work: run it off the event loop for big layers)."""
    area_geoms = shapely.from_wkb([r["geometry"] for r in rows.areas])
    street_geoms = shapely.from_wkb([r["geometry"] for r in rows.streets])
    sensors: dict[str, list[tuple[float, float]]] = {}
    for r in rows.sensors:
        sensors.setdefault(r["zone"], []).append((r["lat"], r["lon"]))
    columns = list(zip(*rows.addresses, strict=True)) if rows.addresses else [[]] * 7
    return Layers(
        areas=[Area(r["layer"], r["name"], g) for r, g in zip(rows.areas, area_geoms, strict=True)],
        addresses=AddressPoints(
            number=list(columns[0]),
            street=list(columns[1]),
            unit=list(columns[2]),
            city=list(columns[3]),
            postcode=list(columns[4]),
            lat=np.asarray(columns[5], dtype=float),
            lon=np.asarray(columns[6], dtype=float),
        ),
        streets=[Street(r["name"], g) for r, g in zip(rows.streets, street_geoms, strict=True)],
        sensors=sensors,
        version=rows.version,
    )


async def read_layers(pool: asyncpg.Pool) -> Layers:
    """Every loaded layer and every zone's active sensors, from one snapshot."""
    return to_layers(await read_layer_rows(pool))
