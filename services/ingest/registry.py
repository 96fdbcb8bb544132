"""The sensor registry in Postgres (all of its SQL lives here).

Used by ingest to authenticate every request (one indexed lookup by token hash, so a
revocation takes effect on the very next request) and by ``shotline sensors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.ingest.auth import hash_token, issue_token
from shared.schemas import Position


class RegistryError(ValueError):
    """A registry operation was refused; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class Sensor:
    sensor_id: str
    zone: str
    position: Position
    status: str
    created_at: datetime
    last_seen_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status == "active"


def _sensor(row: asyncpg.Record) -> Sensor:
    return Sensor(
        sensor_id=row["sensor_id"],
        zone=row["zone"],
        position=Position(lat=row["lat"], lon=row["lon"], alt_m=row["alt_m"]),
        status=row["status"],
        created_at=row["created_at"],
        last_seen_at=row["last_seen_at"],
    )


_COLUMNS = "sensor_id, zone, lat, lon, alt_m, status, created_at, last_seen_at"


async def add_sensor(
    conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str, zone: str, position: Position
) -> tuple[Sensor, str]:
    """Register a sensor; returns it and its token (shown once). Raises RegistryError."""
    token, token_hash = issue_token()
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO sensors (sensor_id, zone, lat, lon, alt_m, token_hash)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}""",
            sensor_id,
            zone,
            position.lat,
            position.lon,
            position.alt_m,
            token_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        raise RegistryError(f"sensor {sensor_id!r} already exists") from exc
    return _sensor(row), token


async def list_sensors(conn: asyncpg.Connection | asyncpg.Pool) -> list[Sensor]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM sensors ORDER BY zone, sensor_id")
    return [_sensor(r) for r in rows]


async def revoke_sensor(conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str) -> Sensor:
    """Revoke at once: the next request with its token gets 403. Raises RegistryError."""
    row = await conn.fetchrow(
        f"""UPDATE sensors SET status = 'revoked', revoked_at = now()
            WHERE sensor_id = $1 RETURNING {_COLUMNS}""",
        sensor_id,
    )
    if row is None:
        raise RegistryError(f"no sensor {sensor_id!r}")
    return _sensor(row)


async def rotate_token(conn: asyncpg.Connection | asyncpg.Pool, sensor_id: str) -> str:
    """Issue a new token; the old one stops working at once. Raises RegistryError."""
    token, token_hash = issue_token()
    row = await conn.fetchrow(
        "UPDATE sensors SET token_hash = $2 WHERE sensor_id = $1 AND status = 'active' "
        "RETURNING sensor_id",
        sensor_id,
        token_hash,
    )
    if row is None:
        raise RegistryError(f"no active sensor {sensor_id!r}")
    return token


async def sensor_for_token(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Sensor | None:
    """The sensor holding this token (active or revoked), or None if the token is unknown."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM sensors WHERE token_hash = $1", hash_token(token)
    )
    return None if row is None else _sensor(row)


async def touch_last_seen(
    conn: asyncpg.Connection | asyncpg.Pool, seen: Mapping[str, datetime]
) -> None:
    """Write many sensors' last-seen times in one statement (never moves one backwards)."""
    if not seen:
        return
    await conn.execute(
        """UPDATE sensors s SET last_seen_at = v.seen
           FROM unnest($1::text[], $2::timestamptz[]) AS v(sensor_id, seen)
           WHERE s.sensor_id = v.sensor_id
             AND (s.last_seen_at IS NULL OR s.last_seen_at < v.seen)""",
        list(seen.keys()),
        list(seen.values()),
    )
