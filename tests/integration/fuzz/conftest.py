"""The fuzz run reuses ingest's fixtures (a running service, registered sensors)."""

from tests.integration.ingest.conftest import db, register, start_ingest  # noqa: F401
