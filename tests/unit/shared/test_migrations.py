"""Migration files: ordered, named, and protected against edits after they were applied."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from shared.db import MigrationError, load_migrations, migrate


def test_shipped_migrations_are_ordered_and_unique() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] == "0001"


async def test_an_edited_applied_migration_is_an_error(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await migrate(conn, load_migrations(tmp_path)) == ["0001"]
        (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
        with pytest.raises(MigrationError, match="edited"):
            await migrate(conn, load_migrations(tmp_path))
    finally:
        await conn.close()
