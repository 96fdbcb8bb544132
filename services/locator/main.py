"""``shotline locator``: run the locator consumer until SIGTERM/SIGINT (wiring only).

With ``KAFKA_BOOTSTRAP_SERVERS`` unset it joins the broker that ``shotline run`` or
``shotline infra`` published in the data directory, or refuses to start (a private broker
would be one that ingest does not write to). The locator uses no database.
"""

from __future__ import annotations

import asyncio
import logging

from services.locator.scoring import ScoringModel
from services.locator.service import LocatorService
from services.locator.settings import LocatorSettings
from shared.logging import configure_logging
from shared.runtime import infrastructure, serve_until_signalled

log = logging.getLogger("shotline.locator")


def run(settings: LocatorSettings, *, stop_timeout_s: float = 15.0) -> None:
    """Blocks until SIGTERM/SIGINT, then stops the service (bounded by ``stop_timeout_s``).

    Raises ValueError for an unreadable scoring model (before touching Kafka),
    BrokerUnavailable if Kafka is not reachable, InfrastructureMissing if no broker is
    configured or published.
    """
    configure_logging(settings.log_level)
    scorer = ScoringModel.load(settings.scoring_model_path)
    with infrastructure(settings, need_database=False) as infra:
        service = LocatorService(settings, bootstrap_servers=infra.bootstrap_servers, scorer=scorer)
        asyncio.run(serve_until_signalled(service, stop_timeout_s=stop_timeout_s))
