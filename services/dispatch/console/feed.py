"""The console's live feed: incident versions as they are stored, fanned out to every
connected browser (Server-Sent Events).

One poller per dispatch instance reads new versions (by ``feed_seq``, whoever stored them:
any instance, the consumer or a reviewer) every ``poll_s`` and hands each to every
subscriber's bounded queue. A browser that reconnects sends ``Last-Event-ID`` and is first
sent what it missed (:func:`catch_up`). Versions committed out of ``feed_seq`` order are not
lost: the poller re-reads the last seconds and skips what it has sent.

A subscriber whose queue is full (a stalled browser) is dropped: it reconnects and catches
up from its last id, instead of the server buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson

log = logging.getLogger("shotline.dispatch.console")

_QUEUE = 1000
_SELECT = """SELECT v.feed_seq, v.incident_id, v.version, v.record::text AS record,
                    v.consumed_at, i.same_shot_as,
                    EXISTS (SELECT 1 FROM dispatch_silence_holds h
                            WHERE h.incident_id = v.incident_id AND h.released_at IS NULL)
                      AS silenced,
                    EXISTS (SELECT 1 FROM dispatch_review_queue q
                            WHERE q.incident_id = v.incident_id AND q.decided_at IS NULL)
                      AS review_pending
             FROM dispatch_incident_versions v JOIN dispatch_incidents i USING (incident_id)"""


def event_of(row: asyncpg.Record) -> dict[str, Any]:
    record = orjson.loads(row["record"])
    return {
        "seq": row["feed_seq"],
        "stored_at": row["consumed_at"].isoformat(),
        "same_shot_as": list(row["same_shot_as"] or []),
        "silenced": row["silenced"],  # a silence holds its delivery (still shown, marked)
        "review_pending": row["review_pending"],
        "incident": record,
    }


async def catch_up(pool: asyncpg.Pool, after: int, limit: int = 2000) -> list[dict[str, Any]]:
    """Versions stored after ``after`` (a feed_seq), oldest first."""
    rows = await pool.fetch(
        _SELECT + " WHERE v.feed_seq > $1 ORDER BY v.feed_seq LIMIT $2", after, limit
    )
    return [event_of(r) for r in rows]


async def recent(pool: asyncpg.Pool, limit: int = 200) -> list[dict[str, Any]]:
    """The latest ``limit`` versions, oldest first (a fresh console's first picture)."""
    rows = await pool.fetch(_SELECT + " ORDER BY v.feed_seq DESC LIMIT $1", limit)
    return [event_of(r) for r in reversed(rows)]


class ConsoleFeed:
    def __init__(self, pool: asyncpg.Pool, *, poll_s: float = 0.1) -> None:
        self.pool = pool
        self.poll_s = poll_s
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._cursor = 0
        self._sent: set[int] = set()

    async def start(self) -> None:
        self._cursor = int(
            await self.pool.fetchval(
                "SELECT coalesce(max(feed_seq), 0) FROM dispatch_incident_versions"
            )
        )
        self._task = asyncio.create_task(self._run(), name="console-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(q)

    @property
    def connected(self) -> int:
        return len(self._subscribers)

    async def _run(self) -> None:
        while True:
            try:
                rows = await self.pool.fetch(
                    _SELECT + " WHERE v.feed_seq > $1 OR v.consumed_at > now() - interval "
                    "'3 seconds' ORDER BY v.feed_seq",
                    self._cursor,
                )
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                log.warning("console feed poll failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            window = set()
            for row in rows:
                seq = row["feed_seq"]
                window.add(seq)
                if seq in self._sent or seq <= self._cursor - 100_000:
                    continue
                self._sent.add(seq)
                self._publish(event_of(row))
            if rows:
                self._cursor = max(self._cursor, rows[-1]["feed_seq"])
            # forget what has left the re-read window (it cannot come back)
            self._sent &= window | {s for s in self._sent if s > self._cursor}
            await asyncio.sleep(self.poll_s)

    def _publish(self, event: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(q)  # it reconnects and catches up


def sse(event: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: version\ndata: %s\n\n" % (event["seq"], orjson.dumps(event))
