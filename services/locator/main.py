"""``shotline locator``: run the locator consumer until SIGTERM/SIGINT (wiring only).

Embedded default: with ``KAFKA_BOOTSTRAP_SERVERS`` unset an embedded broker is started for the
process's lifetime (in-memory log: everything on it is lost when it stops). The locator uses
no database, so none is started.
"""

from __future__ import annotations

import asyncio
import logging

from services.locator.scoring import ScoringModel
from services.locator.service import LocatorService
from services.locator.settings import LocatorSettings
from shared.embedded import EmbeddedKafka
from shared.logging import configure_logging
from shared.runtime import serve_until_signalled

log = logging.getLogger("shotline.locator")


def run(settings: LocatorSettings, *, stop_timeout_s: float = 15.0) -> None:
    """Blocks until SIGTERM/SIGINT, then stops the service (bounded by ``stop_timeout_s``).

    Raises ValueError for an unreadable scoring model (before touching Kafka),
    BrokerUnavailable if Kafka is not reachable, EmbeddedStartError if the embedded broker
    cannot start.
    """
    configure_logging(settings.log_level)
    scorer = ScoringModel.load(settings.scoring_model_path)
    broker: EmbeddedKafka | None = None
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        broker = EmbeddedKafka().start()
        bootstrap = broker.bootstrap_servers
        log.warning(
            "KAFKA_BOOTSTRAP_SERVERS unset: started an embedded broker with an IN-MEMORY log "
            "(everything on it is lost when this process stops)",
            extra={"bootstrap_servers": bootstrap},
        )
    try:
        service = LocatorService(settings, bootstrap_servers=bootstrap, scorer=scorer)
        asyncio.run(serve_until_signalled(service, stop_timeout_s=stop_timeout_s))
    finally:
        if broker is not None:
            broker.stop()
