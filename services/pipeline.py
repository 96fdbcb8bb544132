"""The whole pipeline in one process: ingest, locator and dispatch under one supervisor.

``Pipeline`` is embeddable (tests, ``shotline run``): ``await start()`` resolves nothing by
itself — it is given the broker and database addresses — migrates the database, creates the
topics and starts the three services under :class:`~services.runner.Supervisor`.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field

from services.dispatch.main import DispatchService
from services.dispatch.settings import DispatchSettings
from services.ingest.app import IngestService
from services.ingest.settings import IngestSettings
from services.locator.service import LocatorService
from services.locator.settings import LocatorSettings
from services.runner import Component, Supervisor
from shared.db import migrate_url
from shared.kafka import ensure_topics
from shared.settings import CommonSettings

log = logging.getLogger("shotline.run")


@dataclass
class PipelineSettings:
    """One settings object per service, all read from the environment at start-up."""

    ingest: IngestSettings
    locator: LocatorSettings
    dispatch: DispatchSettings
    generated_admin_token: str | None = None

    @classmethod
    def from_env(cls, **dispatch_overrides: object) -> PipelineSettings:
        """Read every service's settings. Without SHOTLINE_DISPATCH_ADMIN_TOKEN a random one is
        generated for this run (printed once), since the embedded pipeline must start with
        nothing configured. Raises pydantic.ValidationError on bad settings."""
        generated = None
        if (
            "SHOTLINE_DISPATCH_ADMIN_TOKEN" not in os.environ
            and "admin_token" not in dispatch_overrides
        ):
            generated = secrets.token_urlsafe(24)
            dispatch_overrides = {**dispatch_overrides, "admin_token": generated}
        dispatch = DispatchSettings(**dispatch_overrides)  # type: ignore[arg-type]
        return cls(IngestSettings(), LocatorSettings(), dispatch, generated)


@dataclass
class Pipeline:
    settings: PipelineSettings
    bootstrap_servers: str
    database_url: str
    supervisor: Supervisor | None = None
    services: dict[str, object] = field(default_factory=dict)

    async def start(self) -> None:
        """Migrate, create topics, start ingest → locator → dispatch. Raises on failure."""
        await migrate_url(self.database_url)
        common: CommonSettings = self.settings.ingest
        await ensure_topics(
            self.bootstrap_servers,
            {
                common.detections_topic: common.topic_partitions,
                common.incidents_topic: common.topic_partitions,
            },
            connection=common.kafka_connection(),
        )
        s = self.settings

        def ingest() -> IngestService:
            service = IngestService(
                s.ingest, bootstrap_servers=self.bootstrap_servers, database_url=self.database_url
            )
            self.services["ingest"] = service
            return service

        def locator() -> LocatorService:
            service = LocatorService(s.locator, bootstrap_servers=self.bootstrap_servers)
            self.services["locator"] = service
            return service

        def dispatch() -> DispatchService:
            service = DispatchService(
                s.dispatch, bootstrap_servers=self.bootstrap_servers, database_url=self.database_url
            )
            self.services["dispatch"] = service
            return service

        self.supervisor = Supervisor(
            [
                Component("ingest", ingest, watch=lambda svc: svc.wait()),  # type: ignore[attr-defined]
                Component("locator", locator, watch=lambda svc: svc.wait()),  # type: ignore[attr-defined]
                Component("dispatch", dispatch, watch=lambda svc: svc.watch()),  # type: ignore[attr-defined]
            ]
        )
        await self.supervisor.start()

    @property
    def ingest_url(self) -> str:
        return self.services["ingest"].url  # type: ignore[attr-defined, no-any-return]

    @property
    def dispatch_url(self) -> str:
        return self.services["dispatch"].url  # type: ignore[attr-defined, no-any-return]

    async def failed(self) -> None:
        assert self.supervisor is not None
        await self.supervisor.failed()

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop(timeout_s)
