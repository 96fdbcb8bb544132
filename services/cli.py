"""``shotline``: one command-line entry point for every service and for operations.

Every failure an operator can cause (bad input, missing file, unreachable database) ends in a
one-line message on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.ingest.registry import (
    add_sensor,
    list_sensors,
    revoke_sensor,
    rotate_token,
)
from services.ingest.settings import IngestSettings
from shared.cli import err, fail, operator_errors
from shared.db import migrate_url
from shared.runtime import infrastructure
from shared.schemas import Position, is_identifier
from shared.settings import CommonSettings

app = typer.Typer(
    name="shotline",
    help="Shotline: open acoustic gunfire detection and alert dispatch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sensors_app = typer.Typer(help="The sensor registry.", no_args_is_help=True)
app.add_typer(sensors_app, name="sensors")


def _mount_service_apps() -> None:
    from services.dispatch.cli import app as dispatch_app
    from services.dispatch.geocli import addresses_app, areas_app, places_app, streets_app
    from services.locator.cli import app as locator_app
    from services.oversight.cli import mount as mount_oversight
    from services.sensor.cli import sensor

    app.add_typer(locator_app, name="locator")
    app.add_typer(dispatch_app, name="dispatch")
    app.command("sensor")(operator_errors(sensor))
    app.add_typer(areas_app, name="areas")
    app.add_typer(addresses_app, name="addresses")
    app.add_typer(streets_app, name="streets")
    app.add_typer(places_app, name="places")
    mount_oversight(app)


_mount_service_apps()

out = Console()


def _with_database(settings: CommonSettings, action: Callable[[str], Any]) -> Any:
    with infrastructure(settings, need_kafka=False) as infra:
        return asyncio.run(action(infra.database_url))


async def _connect_migrated(dsn: str) -> Any:
    import asyncpg

    await migrate_url(dsn)
    return await asyncpg.connect(dsn)


@app.command()
@operator_errors
def migrate() -> None:
    """Apply pending database migrations (idempotent)."""

    async def _go(dsn: str) -> list[str]:
        return await migrate_url(dsn)

    applied = _with_database(CommonSettings(), _go)
    out.print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@app.command()
@operator_errors
def ingest() -> None:
    """Run the ingest HTTP service (SHOTLINE_INGEST_* settings)."""
    from services.ingest.main import run

    run(IngestSettings())


@app.command()
@operator_errors
def run(
    demo: Annotated[
        bool,
        typer.Option(help="Also simulate a sensor array, shots and a CAD receiver (see alerts)"),
    ] = False,
    demo_every_s: Annotated[float, typer.Option(help="Seconds between simulated situations")] = 8.0,
) -> None:
    """Run the whole pipeline (ingest, locator, dispatch) on the embedded defaults.

    KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL unset: an embedded broker (IN-MEMORY log) and an
    embedded PostgreSQL (.shotline/pgdata) are started and stopped with this command.
    """
    from services.runner import run_pipeline

    run_pipeline(demo=demo, demo_every_s=demo_every_s)


@app.command()
@operator_errors
def infra() -> None:
    """Run the embedded broker and database alone, for services started one by one.

    In other terminals (same directory, or the same SHOTLINE_DATA_DIR), `shotline ingest`,
    `shotline locator` and `shotline dispatch` find and join them (a state file in the data
    directory). Without it, or `shotline run`, or KAFKA_BOOTSTRAP_SERVERS, they refuse to
    start rather than accept detections into a broker no other service reads.
    """
    from services.runner import run_infra

    run_infra()


drill_app = typer.Typer(
    help="Rehearse a shooting through a deployment's ingest, marked as an exercise end to end "
    "(CAP status=Exercise): `shotline drill --ingest URL --tokens FILE --scenario NAME --truth "
    "OUT`, then `shotline drill score --truth OUT --alerts CAPTURE`.",
    invoke_without_command=True,
)
app.add_typer(drill_app, name="drill")


@drill_app.callback()
@operator_errors
def drill(
    ctx: typer.Context,
    ingest: Annotated[str | None, typer.Option(help="The deployment's ingest base URL")] = None,
    tokens: Annotated[
        Path | None,
        typer.Option(help="JSON list of {sensor_id, token, lat, lon, alt_m} of its sensors"),
    ] = None,
    scenario: Annotated[
        str, typer.Option(help="Situation to simulate (shot, burst, two_shooters, ...)")
    ] = "shot",
    truth: Annotated[Path | None, typer.Option(help="Where to write what was fired (JSON)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated situation")] = 0,
) -> None:
    """Replay a simulated situation at real time through ingest; every pulse, incident and
    alert of it is marked an exercise."""
    if ctx.invoked_subcommand is not None:
        return
    missing = [n for n, v in (("--ingest", ingest), ("--tokens", tokens), ("--truth", truth))
               if v is None]
    if missing:
        raise fail(f"shotline drill needs {', '.join(missing)}")
    from services.drill import DrillError, read_sensors, run_drill

    assert tokens is not None and truth is not None and ingest is not None
    try:
        sensors = read_sensors(tokens)
        document = asyncio.run(run_drill(ingest, sensors, scenario, seed=seed))
    except DrillError as exc:
        raise fail(str(exc)) from exc
    truth.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    err.print(
        f"drill {document['drill_id']} ({scenario}, EXERCISE): "
        f"{document['detections_posted']} detections posted {document['statuses']}; "
        f"truth in {truth}"
    )


@drill_app.command("score")
@operator_errors
def drill_score(
    truth: Annotated[Path, typer.Option(help="The truth file `shotline drill` wrote")],
    alerts: Annotated[
        Path, typer.Option(help="JSON lines of captured alerts: {received_at, body}")
    ],
) -> None:
    """Detection, location error, rounds, false alerts and latency of a drill (JSON)."""
    from services.drill import DrillError, read_capture, score

    try:
        document = orjson.loads(truth.read_bytes())
        result = score(document, read_capture(alerts))
    except FileNotFoundError as exc:
        raise fail(f"--truth: {truth} does not exist") from exc
    except orjson.JSONDecodeError as exc:
        raise fail(f"--truth: {truth} is not JSON: {exc}") from exc
    except DrillError as exc:
        raise fail(str(exc)) from exc
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if result["not_marked_exercise"]:
        raise fail(f"{result['not_marked_exercise']} alert(s) of the drill were not marked "
                   "exercise")


@sensors_app.command("add")
@operator_errors
def sensors_add(
    sensor_id: Annotated[str, typer.Argument(help="Unique id, e.g. s-0042")],
    zone: Annotated[str, typer.Option(help="Coverage zone (the partition key)")],
    lat: Annotated[float, typer.Option(help="Surveyed latitude, WGS84")],
    lon: Annotated[float, typer.Option(help="Surveyed longitude, WGS84")],
    alt: Annotated[
        float,
        typer.Option(
            "--alt-m",
            help="Height above the WGS84 ellipsoid, metres (a GPS's ellipsoidal height, not "
            "above sea level: downtown Pittsburgh's ground is ~230 m above sea level and ~196 m "
            "above the ellipsoid, so a sensor on a 20 m roof there is 215)",
        ),
    ] = 0.0,
) -> None:
    """Register a sensor and print its token (shown only this once)."""
    for name, value in (("sensor id", sensor_id), ("zone", zone)):
        if not is_identifier(value):
            raise fail(f"{name} {value!r} must be 1-128 letters, digits, '.', '_', ':' or '-'")
    position = Position(lat=lat, lon=lon, alt_m=alt)

    async def _go(dsn: str) -> str:
        conn = await _connect_migrated(dsn)
        try:
            _, token = await add_sensor(conn, sensor_id, zone, position)
            return token
        finally:
            await conn.close()

    token = _with_database(CommonSettings(), _go)
    err.print(f"sensor {sensor_id} registered in zone {zone}; its token (shown once):")
    print(token)


@sensors_app.command("list")
@operator_errors
def sensors_list() -> None:
    """List registered sensors with their status and last-seen time."""

    async def _go(dsn: str) -> list[Any]:
        conn = await _connect_migrated(dsn)
        try:
            return await list_sensors(conn)
        finally:
            await conn.close()

    table = Table("sensor", "zone", "lat", "lon", "alt_m", "status", "last seen (UTC)")
    for column in table.columns[:2]:
        column.no_wrap = True  # ids are what an operator copies: never cut them
    for s in _with_database(CommonSettings(), _go):
        table.add_row(
            s.sensor_id,
            s.zone,
            f"{s.position.lat:.6f}",
            f"{s.position.lon:.6f}",
            f"{s.position.alt_m:.1f}",
            s.status,
            f"{s.last_seen_at:%Y-%m-%d %H:%M:%S}" if s.last_seen_at else "never",
        )
    out.print(table)


@sensors_app.command("revoke")
@operator_errors
def sensors_revoke(sensor_id: str) -> None:
    """Revoke a sensor: its next request is refused (403)."""

    async def _go(dsn: str) -> None:
        conn = await _connect_migrated(dsn)
        try:
            await revoke_sensor(conn, sensor_id)
        finally:
            await conn.close()

    _with_database(CommonSettings(), _go)
    out.print(f"sensor {sensor_id} revoked")


@sensors_app.command("rotate-token")
@operator_errors
def sensors_rotate(sensor_id: str) -> None:
    """Issue a new token (printed once); the old one stops working at once."""

    async def _go(dsn: str) -> str:
        conn = await _connect_migrated(dsn)
        try:
            return await rotate_token(conn, sensor_id)
        finally:
            await conn.close()

    token = _with_database(CommonSettings(), _go)
    err.print(f"new token for {sensor_id} (shown once; the old one no longer works):")
    print(token)


def main() -> None:  # pragma: no cover - console script
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
