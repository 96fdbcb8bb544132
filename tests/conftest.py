"""Session-wide real infrastructure: one Kafka-protocol broker and one PostgreSQL per run.

* ``kafka_bootstrap``: the embedded tansu broker on a free loopback port (or
  ``TEST_KAFKA_BOOTSTRAP_SERVERS``). Tests isolate themselves with unique topic names
  (``topics`` fixture) and unique consumer-group ids.
* ``postgres``: embedded PostgreSQL in a temporary folder (or ``TEST_DATABASE_URL``). A
  template database is migrated once; each test that asks for ``database_url`` gets its
  own fresh copy (``CREATE DATABASE … TEMPLATE``), so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from shared.db import migrate
from shared.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.kafka import ensure_topics

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KIT = Path(os.environ.get("SHOTLINE_SHARED_KIT", REPO_ROOT.parent / "shared"))
TEMPLATE_DB = "shotline_template"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedKafka().start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@dataclass(frozen=True)
class PostgresServer:
    """How to reach the session's server: ``dsn(database)``."""

    base_dsn: str

    def dsn(self, database: str) -> str:
        # Both forms appear: postgresql://u@host:port/db and postgresql://u:@/db?host=/sock
        head, sep, query = self.base_dsn.partition("?")
        scheme_host, _, _ = head.rpartition("/")
        return f"{scheme_host}/{database}{sep}{query}"


async def _prepare_template(server: PostgresServer) -> None:
    admin = await asyncpg.connect(server.dsn("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(server.dsn(TEMPLATE_DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    external = os.environ.get("TEST_DATABASE_URL")
    embedded: EmbeddedPostgres | None = None
    if external:
        server = PostgresServer(external)
    else:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data").start()
        server = PostgresServer(embedded.dsn)
    asyncio.run(_prepare_template(server))
    try:
        yield server
    finally:
        if embedded is not None:
            embedded.stop()


@pytest.fixture
async def database_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """A freshly migrated database of this test's own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await admin.close()
    yield postgres.dsn(name)
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def empty_database_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """A database with nothing in it, not even migrations."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield postgres.dsn(name)
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@dataclass(frozen=True)
class Topics:
    detections: str
    incidents: str
    partitions: int


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    """Unique, already created detection/incident topics for this test."""
    suffix = uuid.uuid4().hex[:10]
    made = Topics(f"det-{suffix}", f"inc-{suffix}", partitions=3)
    await ensure_topics(
        kafka_bootstrap,
        {
            made.detections: made.partitions,
            made.incidents: made.partitions,
            made.detections + ".dlq": 1,
            made.incidents + ".dlq": 1,
        },
    )
    return made


@pytest.fixture
def shared_kit() -> Path:
    """The kit beside the repo (real data, official schemas); skip when it is absent."""
    if not SHARED_KIT.is_dir():
        pytest.skip(f"the shared kit is not at {SHARED_KIT} (set SHOTLINE_SHARED_KIT)")
    return SHARED_KIT
