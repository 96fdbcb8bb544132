"""The sensor against a real ingest (real broker and database): ingest's own fixtures."""

from __future__ import annotations

from tests.integration.ingest.conftest import (  # noqa: F401  (pytest fixtures)
    client,
    db,
    register,
    start_ingest,
)
