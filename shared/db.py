"""asyncpg plumbing: a pool, and migrations as ordered SQL files recorded in a table.

Migrations live in ``shared/migrations/NNNN_name.sql`` and are applied in order, each in its
own transaction, under an advisory lock so that several instances starting at once do not
race. Applied files are recorded in ``schema_migrations`` with a checksum: editing a file
that has already been applied is an error, not a silent drift.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_LOCK_ID = 0x5107_11E0  # any constant shared by all Shotline processes


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the files shipped."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path | None = None) -> list[Migration]:
    """The shipped migrations, sorted by their numeric prefix."""
    if folder is None:
        files = [
            (entry.name, entry.read_text())
            for entry in resources.files("shared").joinpath("migrations").iterdir()
            if entry.name.endswith(".sql")
        ]
    else:
        files = [(p.name, p.read_text()) for p in folder.glob("*.sql")]
    migrations = []
    for filename, sql in sorted(files):
        version, _, rest = filename.partition("_")
        if not version.isdigit():
            raise MigrationError(f"migration file {filename!r} must start with digits and '_'")
        migrations.append(Migration(version=version, name=rest.removesuffix(".sql"), sql=sql))
    return migrations


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations; returns the versions applied now. Re-runnable.

    Raises :class:`MigrationError` if an applied migration's file has changed.
    """
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was edited after "
                        "it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1,$2,$3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.version)
            log.info("migration applied", extra={"version": migration.version})
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool; raises OSError / asyncpg errors when the database is unreachable."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool


async def migrate_url(dsn: str) -> list[str]:
    """Connect, migrate, disconnect (``shotline migrate``)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
