"""The sensor's small on-disk queue of detections not yet acknowledged by ingest.

A detection is written here (SQLite, committed) before it is posted, and removed only when
ingest answers ``accepted`` or ``duplicate`` for it — or ``rejected``, which resending cannot
change (the reason is logged). So a detection survives an ingest outage, a crash or a
restart of the sensor, and is resent with the same ``detection_id`` (derived from sensor and
onset): a resend that ingest already took is answered ``duplicate``, never a second pulse.

The queue is bounded (``capacity``). When it is full the *oldest* detection is dropped and
counted: after an outage that long, ingest would refuse it as too old anyway
(``SHOTLINE_INGEST_MAX_AGE_S``), and the newest sounds are the ones a dispatcher needs.
No audio is ever written here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Queued:
    detection_id: str
    body: dict
    attempts: int


class DetectionQueue:
    """A bounded FIFO of detection bodies keyed by ``detection_id`` (idempotent ``put``)."""

    def __init__(self, path: Path | str, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a put survives a power cut
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " detection_id TEXT NOT NULL UNIQUE,"
            " body TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0)"
        )

    def put(self, body: dict) -> bool:
        """Store one detection (no-op if its id is already queued); returns whether it was
        new. Drops the oldest entry when the queue is full."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO pending (detection_id, body) VALUES (?, ?)",
                (body["detection_id"], json.dumps(body, separators=(",", ":"))),
            )
            added = cur.rowcount == 1
            over = len(self) - self.capacity
            if over > 0:
                self._db.execute(
                    "DELETE FROM pending WHERE seq IN "
                    "(SELECT seq FROM pending ORDER BY seq LIMIT ?)",
                    (over,),
                )
                self.dropped += over
            return added

    def peek(self, limit: int) -> list[Queued]:
        """The oldest ``limit`` detections, oldest first (they stay queued)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT detection_id, body, attempts FROM pending ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Queued(d, json.loads(b), a) for d, b, a in rows]

    def remove(self, detection_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany(
                "DELETE FROM pending WHERE detection_id = ?", [(d,) for d in detection_ids]
            )

    def attempted(self, detection_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE pending SET attempts = attempts + 1 WHERE detection_id = ?",
                [(d,) for d in detection_ids],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
