"""The live gazetteer of one dispatch instance, rebuilt without downtime when layers change.

:class:`PlaceIndex` holds one immutable :class:`~services.dispatch.gazetteer.Gazetteer`.
:meth:`PlaceIndex.refresh` reads the tables (one snapshot), builds the new index in a worker
thread and swaps it in with one assignment: lookups never wait for a reload, they answer from
the old index until the new one is complete. :meth:`PlaceIndex.run` refreshes when a load
sends its ``NOTIFY`` and otherwise every ``interval_s`` (a missed notification, a sensor
added or revoked).

Where the words are computed: when dispatch stores an incident version (the consumer), and
they are stored with that version. Every delivery attempt, retry and replay renders the
stored words, so the same version is always sent with the same words, whatever was reloaded
since; the locator stays free of city layers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from services.dispatch import geostore, metrics
from services.dispatch.gazetteer import Gazetteer, Layers
from shared.schemas import IncidentRecord

log = logging.getLogger("shotline.dispatch.places")


def _build(rows: geostore.LayerRows) -> tuple[Layers, Gazetteer]:
    layers = geostore.to_layers(rows)
    return layers, Gazetteer.build(layers)


class PlaceIndex:
    def __init__(self) -> None:
        self.gazetteer = Gazetteer(Layers())
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def version(self) -> str:
        return self.gazetteer.version

    def describe(self, record: IncidentRecord) -> dict[str, Any] | None:
        """The place JSON of an incident version (None when no city layer is loaded)."""
        started = time.perf_counter()
        place = self.gazetteer.describe(record.location.lat, record.location.lon, record.zone)
        if place is None:
            return None
        words = place.as_json()
        metrics.PLACES_LOOKUP.observe(time.perf_counter() - started)
        return words

    async def refresh(self, pool: asyncpg.Pool) -> bool:
        """Rebuild if the layers or sensors changed; True if a new index was swapped in."""
        async with self._lock:
            if await geostore.signature(pool) == self.gazetteer.version:
                return False
            rows = await geostore.read_layer_rows(pool)
            # Converting and indexing hundreds of thousands of rows is CPU work: a thread,
            # so the event loop (and the lookups on it) keeps running meanwhile.
            layers, built = await asyncio.to_thread(_build, rows)
            self.gazetteer = built  # one assignment: readers see the old or the new index
            metrics.PLACES_REFRESHES.labels("rebuilt").inc()
            log.info(
                "place index rebuilt",
                extra={
                    "layers_version": built.version,
                    "areas": len(layers.areas),
                    "addresses": len(layers.addresses),
                    "streets": len(layers.streets),
                    "intersections": built.intersection_count,
                },
            )
            return True

    async def try_refresh(self, pool: asyncpg.Pool) -> bool:
        """:meth:`refresh`, but a failure (database down, a layer that cannot be indexed) is
        logged with its traceback and counted, and the previous index keeps answering:
        alerts must not stop for a layer. True if a new index was swapped in."""
        try:
            return await self.refresh(pool)
        except Exception:
            metrics.PLACES_REFRESHES.labels("failed").inc()
            log.exception("place index refresh failed; the previous index answers")
            return False

    async def run(self, pool: asyncpg.Pool, database_url: str, interval_s: float) -> None:
        """Refresh on every layer load's NOTIFY, and every ``interval_s``; until cancelled.

        A failed refresh is tried again at the next tick (see :meth:`try_refresh`)."""
        listener: asyncpg.Connection | None = None
        try:
            while True:
                if listener is None or listener.is_closed():
                    listener = await self._listen(database_url)
                await self.try_refresh(pool)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval_s)
                self._wake.clear()
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def _listen(self, database_url: str) -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(database_url)
            await conn.add_listener(geostore.NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return conn
        except (asyncpg.PostgresError, OSError):
            log.warning("cannot listen for layer loads; polling only", exc_info=True)
            return None
