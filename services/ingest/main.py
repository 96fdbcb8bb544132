"""``shotline ingest``: run the ingest HTTP service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from shared.db import migrate_url
from shared.logging import configure_logging
from shared.runtime import infrastructure, serve_until_signalled


def run(settings: IngestSettings) -> None:
    """Blocks until a signal; embedded broker/database when their URLs are unset."""
    configure_logging(settings.log_level)
    with infrastructure(settings) as infra:

        async def _main() -> None:
            if infra.embedded_postgres:
                await migrate_url(infra.database_url)
            service = IngestService(
                settings,
                bootstrap_servers=infra.bootstrap_servers,
                database_url=infra.database_url,
            )
            await serve_until_signalled(service)

        asyncio.run(_main())
