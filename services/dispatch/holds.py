"""The database side of review and silences: the store's gate, the reviewer's queue and
decisions, silences with their audit trail, and the sweeps that release what is held.

The decisions are pure (:mod:`services.dispatch.review`, :mod:`services.dispatch.silences`);
this module only reads their inputs and writes their outcomes. A review decision or a
passed deadline is stored as a new incident version through :func:`store.store_incident`,
so it reaches subscribers through the same outbox, ordering and Cancel path as the
locator's versions.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.dispatch import metrics, review, silences, store
from services.dispatch.routing import Told
from shared.schemas import IncidentRecord, IncidentReview

log = logging.getLogger("shotline.dispatch.holds")

#: Serialises review decisions of one incident across instances (with the incident row lock).
_SILENCE_COLUMNS = (
    "silence_id, area::text AS area, starts_at, ends_at, classes, include_high_gunfire, "
    "author, reason, expired_at, released_at, created_at, updated_at"
)


@dataclass(frozen=True)
class GateSettings:
    review_deadline_s: float = 30.0
    gunfire_floor: float = 0.9
    release_relevance_s: float = 600.0


def _silence(row: asyncpg.Record) -> silences.Silence:
    return silences.Silence(
        silence_id=row["silence_id"],
        area=orjson.loads(row["area"]),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        classes=None if row["classes"] is None else frozenset(row["classes"]),
        include_high_gunfire=row["include_high_gunfire"],
        expired_at=row["expired_at"],
    )


def public_silence(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["area"] = orjson.loads(out["area"]) if isinstance(out["area"], str) else out["area"]
    out["classes"] = None if out["classes"] is None else list(out["classes"])
    return out


async def _live_silences(conn: asyncpg.Connection, now: datetime) -> list[silences.Silence]:
    rows = await conn.fetch(
        f"""SELECT {_SILENCE_COLUMNS} FROM dispatch_silences
            WHERE starts_at <= $1 AND ends_at > $1 AND (expired_at IS NULL OR expired_at > $1)""",
        now,
    )
    return [_silence(r) for r in rows]


def make_gate(plan: store.Planner, settings: GateSettings, clock: Any) -> store.Gate:
    """The store's gate: queue incidents for review-required subscriptions, hold silenced
    incidents (nothing planned now; :func:`release_silences` plans them later)."""

    async def gate(
        conn: asyncpg.Connection,
        record: IncidentRecord,
        subs: list[store.SubscriptionRow],
        notified: Mapping[str, Told],
        planned: list[store.PlannedDelivery],
    ) -> list[store.PlannedDelivery]:
        now = clock()
        required = [s for s in subs if s.review == "required"]
        if record.review is None and record.event != "cancelled" and required:
            # would a review-required subscription be told, had the version been reviewed?
            probe = record.model_copy(update={"review": _PROBE})
            if plan(probe, required, notified):
                queued = await conn.fetchval(
                    """INSERT INTO dispatch_review_queue (incident_id, queued_at, deadline_at)
                       VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1""",
                    record.incident_id,
                    now,
                    review.deadline_for(now, settings.review_deadline_s),
                )
                if queued:
                    metrics.REVIEW_QUEUED.inc()
        held_by = silences.silencing(
            record, await _live_silences(conn, now), now=now, gunfire_floor=settings.gunfire_floor
        )
        if held_by is None:
            return planned
        await conn.execute(
            """INSERT INTO dispatch_silence_holds (incident_id, silence_id, held_at)
               VALUES ($1, $2, $3)
               ON CONFLICT (incident_id, silence_id)
               DO UPDATE SET released_at = NULL, outcome = NULL""",
            record.incident_id,
            held_by.silence_id,
            now,
        )
        if planned:
            metrics.SILENCED.inc()
        return []

    return gate


_EPOCH = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
_PROBE = IncidentReview(
    status="unreviewed",
    reviewed_by="probe",
    reason="",
    decided_at=_EPOCH,
    queued_at=_EPOCH,
    deadline_at=_EPOCH,
)


# ------------------------------------------------------------------------------------------
# Review
# ------------------------------------------------------------------------------------------


class ReviewConflict(Exception):
    """The decision cannot be taken (cancelled incident, another decision won the race)."""


async def review_queue(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """Undecided items, earliest deadline first, with each incident's current summary."""
    rows = await conn.fetch(
        """SELECT q.incident_id, q.queued_at, q.deadline_at, i.version, i.classification,
                  i.gunfire_probability, i.lat, i.lon, i.zone, i.shot_time,
                  (i.record->>'rounds')::int AS rounds
           FROM dispatch_review_queue q JOIN dispatch_incidents i USING (incident_id)
           WHERE q.decided_at IS NULL ORDER BY q.deadline_at, q.incident_id"""
    )
    return [dict(r) for r in rows]


async def _item(conn: Any, incident_id: str) -> tuple[review.QueueItem | None, IncidentRecord]:
    row = await conn.fetchrow(
        """SELECT i.record::text AS record, q.queued_at, q.deadline_at, q.decided_at
           FROM dispatch_incidents i LEFT JOIN dispatch_review_queue q USING (incident_id)
           WHERE i.incident_id = $1""",
        incident_id,
    )
    if row is None:
        raise LookupError(incident_id)
    record = IncidentRecord.model_validate_json(row["record"])
    if row["queued_at"] is None:
        return None, record
    return review.QueueItem(
        incident_id, row["queued_at"], row["deadline_at"], row["decided_at"]
    ), record


async def decide(
    pool: asyncpg.Pool,
    incident_id: str,
    decision: str,
    *,
    reviewed_by: str,
    reason: str,
    now: datetime,
    plan: store.Planner,
    gate: store.Gate,
    classification: str | None = None,
    rounds: int | None = None,
) -> IncidentRecord:
    """Store the decision as the incident's next version; returns it.

    Raises ``LookupError`` (unknown incident), ``ValueError`` (a decision that makes no
    sense, see :func:`review.decided_version`), :class:`ReviewConflict` (another version was
    stored meanwhile: decide again on the new picture).
    """
    item, current = await _item(pool, incident_id)
    if item is None:  # nobody waits for it; a reviewer may still decide (the console)
        item = review.QueueItem(incident_id, now, now)
    try:
        version = review.decided_version(
            current,
            decision,  # type: ignore[arg-type]
            reviewed_by=reviewed_by,
            reason=reason,
            item=item,
            now=now,
            classification=classification,
            rounds=rounds,
        )
    except ValueError as exc:
        if current.event == "cancelled":
            raise ReviewConflict(str(exc)) from exc
        raise
    # a decision does not move the incident: it carries the words its version was sent with
    place = await store.version_place(pool, incident_id, current.version)
    result = await store.store_incident(pool, version, plan, gate=gate, place=place)
    if result.outcome != "stored":
        raise ReviewConflict(f"version {version.version} exists already: decide again")
    assert version.review is not None
    first = await pool.fetchval(
        """UPDATE dispatch_review_queue SET decided_at = $2, decision = $3, reviewed_by = $4,
                  late = $5
           WHERE incident_id = $1
             AND (decided_at IS NULL OR (decision = 'unreviewed' AND $3 <> 'unreviewed'))
           RETURNING 1""",
        incident_id,
        now,
        version.review.status,
        reviewed_by,
        version.review.late,
    )
    if first and decision != "unreviewed":
        metrics.REVIEW_DECISION_S.labels(decision).observe((now - item.queued_at).total_seconds())
        if version.review.late:
            metrics.REVIEW_LATE.inc()
    return version


async def absorb_machine_version(
    pool: asyncpg.Pool, record: IncidentRecord, partition: int | None, offset: int | None
) -> IncidentRecord | None:
    """The renumbered version to store for a machine version that collided with a review
    decision (:func:`review.carry_over`), or None (a true duplicate, e.g. a Kafka replay
    of a message already stored: same partition and offset)."""
    if partition is not None and offset is not None:
        seen = await pool.fetchval(
            """SELECT 1 FROM dispatch_incident_versions
               WHERE incident_id = $1 AND kafka_partition = $2 AND kafka_offset = $3""",
            record.incident_id,
            partition,
            offset,
        )
        if seen:
            return None
    raw = await pool.fetchval(
        "SELECT record::text FROM dispatch_incidents WHERE incident_id = $1", record.incident_id
    )
    if raw is None:
        return None
    carried = review.carry_over(IncidentRecord.model_validate_json(raw), record)
    if carried is None and record.review is None:
        current = IncidentRecord.model_validate_json(raw)
        if current.review is not None and current.event == "cancelled":
            log.info(
                "a machine version after a rejection is not stored (the rejection stands)",
                extra={"incident_id": record.incident_id, "version": record.version},
            )
    return carried


async def pass_deadlines(
    pool: asyncpg.Pool, *, now: datetime, plan: store.Planner, gate: store.Gate
) -> list[str]:
    """Store ``unreviewed`` for every undecided item whose deadline passed; their ids."""
    rows = await pool.fetch(
        """SELECT incident_id, queued_at, deadline_at FROM dispatch_review_queue
           WHERE decided_at IS NULL AND deadline_at <= $1 ORDER BY deadline_at LIMIT 100""",
        now,
    )
    done = []
    for r in rows:
        item = review.QueueItem(r["incident_id"], r["queued_at"], r["deadline_at"])
        if not review.deadline_passed(item, now):
            continue
        try:
            await decide(
                pool,
                item.incident_id,
                "unreviewed",
                reviewed_by=review.DEADLINE_ACTOR,
                reason="review deadline passed without a decision",
                now=now,
                plan=plan,
                gate=gate,
            )
        except ReviewConflict:
            # cancelled meanwhile, or a version raced in: close the item, nothing to send
            await pool.execute(
                "UPDATE dispatch_review_queue SET decided_at = $2, decision = 'unreviewed' "
                "WHERE incident_id = $1 AND decided_at IS NULL",
                item.incident_id,
                now,
            )
            continue
        metrics.REVIEW_UNREVIEWED.inc()
        done.append(item.incident_id)
    return done


# ------------------------------------------------------------------------------------------
# Silences
# ------------------------------------------------------------------------------------------


async def _log(
    conn: asyncpg.Connection, row: asyncpg.Record, action: str, actor: str, reason: str
) -> None:
    snapshot = public_silence(row)
    await conn.execute(
        """INSERT INTO dispatch_silence_events (silence_id, action, actor, reason, snapshot)
           VALUES ($1, $2, $3, $4, $5::jsonb)""",
        row["silence_id"],
        action,
        actor,
        reason,
        orjson.dumps(snapshot, default=str).decode(),
    )


async def create_silence(
    pool: asyncpg.Pool,
    *,
    area: dict[str, Any],
    starts_at: datetime,
    ends_at: datetime,
    classes: list[str] | None,
    include_high_gunfire: bool,
    author: str,
    reason: str,
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO dispatch_silences (silence_id, area, starts_at, ends_at, classes,
                  include_high_gunfire, author, reason)
                VALUES ($1, $2::jsonb, $3, $4, $5, $6, $7, $8) RETURNING {_SILENCE_COLUMNS}""",
            "sil_" + secrets.token_hex(8),
            orjson.dumps(area).decode(),
            starts_at,
            ends_at,
            classes,
            include_high_gunfire,
            author,
            reason,
        )
        assert row is not None
        await _log(conn, row, "created", author, reason)
    return public_silence(row)


async def change_silence(
    pool: asyncpg.Pool, silence_id: str, changes: dict[str, Any], *, actor: str, reason: str
) -> dict[str, Any] | None:
    """Apply ``changes`` (area, starts_at, ends_at, classes, include_high_gunfire) and log.

    A changed silence is released again when it ends (``released_at`` is cleared)."""
    sets, args = [], [silence_id]
    for key, value in changes.items():
        if key == "area":
            value = orjson.dumps(value).decode()
        args.append(value)
        sets.append(f"{key} = ${len(args)}" + ("::jsonb" if key == "area" else ""))
    sets += ["updated_at = now()", "released_at = NULL"]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE dispatch_silences SET {", ".join(sets)}
                WHERE silence_id = $1 AND expired_at IS NULL RETURNING {_SILENCE_COLUMNS}""",
            *args,
        )
        if row is None:
            return None
        await _log(conn, row, "changed", actor, reason)
    return public_silence(row)


async def expire_silence(
    pool: asyncpg.Pool, silence_id: str, *, now: datetime, actor: str, reason: str
) -> dict[str, Any] | None:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE dispatch_silences SET expired_at = $2, updated_at = now()
                WHERE silence_id = $1 AND expired_at IS NULL RETURNING {_SILENCE_COLUMNS}""",
            silence_id,
            now,
        )
        if row is None:
            return None
        await _log(conn, row, "expired", actor, reason)
    return public_silence(row)


async def list_silences(conn: Any) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {_SILENCE_COLUMNS} FROM dispatch_silences ORDER BY starts_at")
    return [public_silence(r) for r in rows]


async def get_silence(conn: Any, silence_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_SILENCE_COLUMNS} FROM dispatch_silences WHERE silence_id = $1", silence_id
    )
    if row is None:
        return None
    out = public_silence(row)
    events = await conn.fetch(
        "SELECT action, actor, reason, at FROM dispatch_silence_events "
        "WHERE silence_id = $1 ORDER BY event_id",
        silence_id,
    )
    out["history"] = [dict(e) for e in events]
    out["held_incidents"] = [
        dict(r)
        for r in await conn.fetch(
            "SELECT incident_id, held_at, released_at, outcome FROM dispatch_silence_holds "
            "WHERE silence_id = $1 ORDER BY held_at",
            silence_id,
        )
    ]
    return out


async def release_silences(
    pool: asyncpg.Pool, *, now: datetime, plan: store.Planner, settings: GateSettings
) -> list[tuple[str, str]]:
    """Release the holds of silences that ended or were expired: each held incident's
    current version is planned to its subscribers if still relevant (:func:`silences.release`).
    Returns (incident_id, outcome) pairs."""
    ended = await pool.fetch(
        """SELECT silence_id FROM dispatch_silences
           WHERE released_at IS NULL AND (ends_at <= $1 OR expired_at <= $1)""",
        now,
    )
    out: list[tuple[str, str]] = []
    for s in ended:
        async with pool.acquire() as conn, conn.transaction():
            live = await _live_silences(conn, now)
            holds = await conn.fetch(
                """SELECT h.incident_id, i.record::text AS record
                   FROM dispatch_silence_holds h JOIN dispatch_incidents i USING (incident_id)
                   WHERE h.silence_id = $1 AND h.released_at IS NULL
                   FOR UPDATE OF h""",
                s["silence_id"],
            )
            for h in holds:
                record = IncidentRecord.model_validate_json(h["record"])
                verdict = silences.release(
                    record,
                    live,
                    now=now,
                    gunfire_floor=settings.gunfire_floor,
                    relevance_s=settings.release_relevance_s,
                )
                outcome = verdict or "delivered"
                if verdict == "held":
                    other = silences.silencing(
                        record, live, now=now, gunfire_floor=settings.gunfire_floor
                    )
                    assert other is not None
                    await conn.execute(
                        """INSERT INTO dispatch_silence_holds (incident_id, silence_id, held_at)
                           VALUES ($1, $2, $3) ON CONFLICT (incident_id, silence_id)
                           DO UPDATE SET released_at = NULL, outcome = NULL""",
                        record.incident_id,
                        other.silence_id,
                        now,
                    )
                    outcome = f"held by {other.silence_id}"
                elif verdict is None:
                    await _plan_current(conn, record, plan)
                await conn.execute(
                    """UPDATE dispatch_silence_holds SET released_at = $3, outcome = $4
                       WHERE incident_id = $1 AND silence_id = $2""",
                    record.incident_id,
                    s["silence_id"],
                    now,
                    outcome,
                )
                out.append((record.incident_id, outcome))
            await conn.execute(
                "UPDATE dispatch_silences SET released_at = $2 WHERE silence_id = $1",
                s["silence_id"],
                now,
            )
    return out


async def _plan_current(
    conn: asyncpg.Connection, record: IncidentRecord, plan: store.Planner
) -> None:
    subs = [
        store._subscription(r)
        for r in await conn.fetch(
            f"SELECT {store._SUB_COLUMNS} FROM dispatch_subscriptions WHERE status = 'active'"
        )
    ]
    # what each subscription was told of earlier versions (none of this one: it was held)
    notified = {
        r["subscription_id"]: Told(r["classification"], bool(r["cancelled"]))
        for r in await conn.fetch(store._TOLD, record.incident_id, record.version + 1)
    }
    await store._insert_outbox(conn, record, plan(record, subs, notified))


async def refresh_queue_gauges(pool: asyncpg.Pool, now: datetime) -> None:
    row = await pool.fetchrow(
        "SELECT count(*) AS n, min(queued_at) AS oldest FROM dispatch_review_queue "
        "WHERE decided_at IS NULL"
    )
    assert row is not None
    metrics.REVIEW_QUEUE_LENGTH.set(row["n"])
    oldest = row["oldest"]
    metrics.REVIEW_QUEUE_OLDEST_S.set(0 if oldest is None else (now - oldest).total_seconds())
