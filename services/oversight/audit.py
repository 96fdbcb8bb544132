"""The hash-chained audit log: every change, and every read of an incident's exact data.

Row ``n`` carries ``prev_hash`` (row ``n-1``'s hash; 64 zeros for row 1) and
``hash = SHA-256(prev_hash || "\\n" || canonical JSON of [seq, at, actor, role, action,
target, detail])``. Sequence numbers are assigned under a transaction-scoped advisory lock
as ``last + 1`` (not by a database sequence, which leaves gaps on rollback), so:

* an **edited** row no longer matches its own hash;
* a **deleted** row leaves a gap in ``seq`` (and the next row's ``prev_hash`` points at it);
* an **inserted** row either duplicates a ``seq`` (refused by the key) or renumbers the
  rows after it, whose hashes then no longer match.

:func:`verify` names the first row where the chain breaks. Appending in the transaction
of the change it records means a change is never committed without its audit row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.schemas import format_time

GENESIS = "0" * 64
_AUDIT_LOCK = 0x5107_A0D1


def canonical(value: Any) -> str:
    """Stable JSON text: sorted keys, no spaces, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def row_hash(
    prev_hash: str, seq: int, at: str, actor: str, role: str, action: str, target: str, detail: str
) -> str:
    body = canonical([seq, at, actor, role, action, target, detail])
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who did it: a user name (or 'bootstrap', 'cli', 'system') and the role it acted in."""

    name: str
    role: str


SYSTEM = Actor("system", "system")
CLI = Actor("cli", "operator")


async def append(
    conn: asyncpg.Connection | asyncpg.Pool,
    actor: Actor,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    *,
    at: datetime,
) -> int:
    """Append one row (in the caller's transaction when given a connection); its seq."""
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            return await append(c, actor, action, target, detail, at=at)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _AUDIT_LOCK)
        last = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        seq = 1 if last is None else last["seq"] + 1
        prev = GENESIS if last is None else last["hash"]
        stamp = format_time(at)
        text = canonical(detail or {})
        digest = row_hash(prev, seq, stamp, actor.name, actor.role, action, target, text)
        await conn.execute(
            """INSERT INTO audit_log (seq, at, actor, role, action, target, detail, prev_hash,
                                      hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            seq,
            stamp,
            actor.name,
            actor.role,
            action,
            target,
            text,
            prev,
            digest,
        )
    return seq


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


async def verify(conn: asyncpg.Connection | asyncpg.Pool) -> Verdict:
    """Recompute the chain from row 1; the first row that breaks it, and how."""
    rows = await conn.fetch("SELECT * FROM audit_log ORDER BY seq")
    prev = GENESIS
    expected = 1
    for r in rows:
        seq = r["seq"]
        if seq != expected:
            return Verdict(
                False,
                len(rows),
                prev,
                expected,
                f"row {expected} is missing (deleted): the log jumps from {expected - 1} to {seq}"
                if seq > expected
                else f"row {seq} is out of order",
            )
        if r["prev_hash"] != prev:
            return Verdict(
                False,
                len(rows),
                prev,
                seq,
                f"row {seq} does not follow row {seq - 1} (a row was inserted or deleted "
                "before it, or its prev_hash edited)",
            )
        digest = row_hash(
            prev, seq, r["at"], r["actor"], r["role"], r["action"], r["target"], r["detail"]
        )
        if digest != r["hash"]:
            return Verdict(
                False, len(rows), prev, seq, f"row {seq} was edited: its hash does not match"
            )
        prev = digest
        expected += 1
    return Verdict(True, len(rows), prev)


async def list_rows(
    conn: asyncpg.Connection | asyncpg.Pool, *, after_seq: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit
    )
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]
