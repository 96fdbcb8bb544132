"""Every SQL statement of the dispatch service, and the rows they return.

Contracts that the rest of the service relies on:

* :func:`store_incident` is idempotent: a replayed (incident_id, version) changes nothing, an
  older version arriving after a newer one is kept in the history but does not regress the
  current state and creates no deliveries. The outbox rows are written in the same
  transaction as the version (so a crash can never store one without the other), and a
  ``NOTIFY`` wakes the delivery workers of every instance when that transaction commits.
* :func:`claim_due` hands a row to at most one worker at a time: a lease
  (``claimed_until``) and a fencing token (``claim_token``). A worker that dies leaves the
  row claimed until the lease runs out; then another worker takes it. Every update of a
  claimed row names its token, so a worker whose lease expired cannot overwrite the newer
  owner's result.
* It also keeps one subscriber's messages about one incident in order: it claims only the
  newest pending row of a (subscription, incident) pair with none in flight, and decides
  with :func:`services.dispatch.ordering.decide_pair` over the pair's rows;
  :func:`confirm` then carries the decision out (send it, supersede stale rows, drop or
  re-plan it) and, checking again after the claims committed, never lets two rows of one
  pair be sent at once.
* A webhook row is rendered once (stored by :func:`confirm`, before its first send) and
  keeps its body: every retry and replay of its webhook-id sends those bytes.

All functions raise asyncpg errors on database failures; none swallows them.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.dispatch.model import endpoint_key
from services.dispatch.ordering import PairRow, decide_pair
from services.dispatch.routing import Told
from services.dispatch.signing import webhook_id
from shared.schemas import IncidentRecord

#: The channel name of the ``NOTIFY`` sent when outbox rows are committed.
NOTIFY_CHANNEL = "shotline_dispatch_outbox"

Conn = asyncpg.Connection | asyncpg.Pool


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _load(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


# --------------------------------------------------------------------------------------------
# Subscriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionRow:
    subscription_id: str
    name: str
    channel: str
    status: str
    disabled_reason: str | None
    geofence: dict[str, Any]
    classes: list[str]
    min_probability: float
    events: list[str]
    format: str
    url: str | None
    push: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    review: str = "none"


_SUB_COLUMNS = (
    "subscription_id, name, channel, status, disabled_reason, geofence::text AS geofence, "
    "classes, min_probability, events, format, url, push::text AS push, created_at, updated_at, "
    "review"
)


def _subscription(row: asyncpg.Record) -> SubscriptionRow:
    values = dict(row)
    values["geofence"] = _load(values["geofence"])
    values["push"] = _load(values["push"])
    values["classes"] = list(values["classes"])
    values["events"] = list(values["events"])
    return SubscriptionRow(**values)


def new_subscription_id() -> str:
    return "sub_" + secrets.token_hex(8)


async def create_subscription(
    pool: asyncpg.Pool,
    *,
    name: str,
    channel: str,
    geofence: dict[str, Any],
    classes: Sequence[str],
    min_probability: float,
    events: Sequence[str],
    format: str,
    url: str | None,
    push: dict[str, Any] | None,
    secret: str | None,
    review: str = "none",
) -> SubscriptionRow:
    """Insert a subscription (and its first signing secret, for webhooks)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO dispatch_subscriptions
                  (subscription_id, name, channel, geofence, classes, min_probability, events,
                   format, url, push, review)
                VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10::jsonb, $11)
                RETURNING {_SUB_COLUMNS}""",
            new_subscription_id(),
            name,
            channel,
            _json(geofence),
            list(classes),
            min_probability,
            list(events),
            format,
            url,
            None if push is None else _json(push),
            review,
        )
        assert row is not None
        if secret is not None:
            await conn.execute(
                "INSERT INTO dispatch_subscription_secrets (subscription_id, secret) "
                "VALUES ($1, $2)",
                row["subscription_id"],
                secret,
            )
    return _subscription(row)


async def get_subscription(conn: Conn, subscription_id: str) -> SubscriptionRow | None:
    row = await conn.fetchrow(
        f"SELECT {_SUB_COLUMNS} FROM dispatch_subscriptions WHERE subscription_id = $1",
        subscription_id,
    )
    return None if row is None else _subscription(row)


async def list_subscriptions(
    conn: Conn, *, status: str | None = None, channel: str | None = None
) -> list[SubscriptionRow]:
    rows = await conn.fetch(
        f"""SELECT {_SUB_COLUMNS} FROM dispatch_subscriptions
            WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR channel = $2)
            ORDER BY created_at, subscription_id""",
        status,
        channel,
    )
    return [_subscription(r) for r in rows]


#: Columns an update may change (the channel is fixed for a subscription's life).
UPDATABLE = frozenset(
    {"name", "geofence", "classes", "min_probability", "events", "format", "url", "push", "status",
     "review"}
)


async def update_subscription(
    pool: asyncpg.Pool, subscription_id: str, changes: dict[str, Any]
) -> SubscriptionRow | None:
    """Apply ``changes`` (keys from :data:`UPDATABLE`); None if the subscription is unknown.

    Re-enabling (status='active') clears the disabled reason.
    """
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    sets: list[str] = []
    args: list[Any] = [subscription_id]
    for key, value in changes.items():
        if key in {"geofence", "push"}:
            args.append(None if value is None else _json(value))
            sets.append(f"{key} = ${len(args)}::jsonb")
        else:
            args.append(list(value) if key in {"classes", "events"} else value)
            sets.append(f"{key} = ${len(args)}")
    if changes.get("status") == "active":
        sets.append("disabled_reason = NULL")
    sets.append("updated_at = now()")
    row = await pool.fetchrow(
        f"UPDATE dispatch_subscriptions SET {', '.join(sets)} WHERE subscription_id = $1 "
        f"RETURNING {_SUB_COLUMNS}",
        *args,
    )
    return None if row is None else _subscription(row)


async def disable_subscription(
    conn: Conn, subscription_id: str, reason: str
) -> SubscriptionRow | None:
    """Stop routing to it; its pending deliveries fail (they would only be refused)."""
    row = await conn.fetchrow(
        f"""UPDATE dispatch_subscriptions
            SET status = 'disabled', disabled_reason = $2, updated_at = now()
            WHERE subscription_id = $1 RETURNING {_SUB_COLUMNS}""",
        subscription_id,
        reason,
    )
    return None if row is None else _subscription(row)


async def rotate_secret(
    pool: asyncpg.Pool, subscription_id: str, new_secret: str, old_valid_until: datetime
) -> bool:
    """Make ``new_secret`` current; current secrets keep signing until ``old_valid_until``.

    Returns False if the subscription is unknown. Older secrets whose overlap ends later are
    cut to ``old_valid_until`` as well, so at most two secrets sign at any time.
    """
    async with pool.acquire() as conn, conn.transaction():
        exists = await conn.fetchval(
            "SELECT 1 FROM dispatch_subscriptions WHERE subscription_id = $1 FOR UPDATE",
            subscription_id,
        )
        if not exists:
            return False
        await conn.execute(
            """UPDATE dispatch_subscription_secrets SET valid_until = $2
               WHERE subscription_id = $1 AND (valid_until IS NULL OR valid_until > $2)""",
            subscription_id,
            old_valid_until,
        )
        await conn.execute(
            "INSERT INTO dispatch_subscription_secrets (subscription_id, secret) VALUES ($1, $2)",
            subscription_id,
            new_secret,
        )
    return True


# --------------------------------------------------------------------------------------------
# Incidents and the outbox
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedDelivery:
    """One outbox row to write: who gets this incident version, where, under which id."""

    subscription_id: str
    channel: str
    endpoint: str
    webhook_id: str
    event: str  # what this subscriber is told (may differ from the incident's event)


#: Decides the outbox rows of a new current version (pure): from the record, the active
#: subscriptions and what each subscription planned an earlier version was told.
Planner = Callable[
    [IncidentRecord, list[SubscriptionRow], Mapping[str, Told]], list[PlannedDelivery]
]
#: Runs in the store's transaction after planning (review queue, silences: see
#: :mod:`services.dispatch.holds`); returns the deliveries to write now.
Gate = Callable[
    [
        asyncpg.Connection,
        IncidentRecord,
        list[SubscriptionRow],
        Mapping[str, Told],
        list[PlannedDelivery],
    ],
    Awaitable[list[PlannedDelivery]],
]
#: Do two incidents (of different zones) report the same shot? (``routing.same_shot``)
SameShot = Callable[[IncidentRecord, IncidentRecord], bool]

#: How far back a stored incident's first round may lie and still share a shot with a new
#: one (bursts are updated while rounds come less than a minute apart; this is generous).
_SAME_SHOT_LOOKBACK_S = 600.0
#: Candidates are read only this far after the new incident's last round (s; the window
#: setting is far smaller) and within this many degrees of it (5.5 km of latitude, 4 km of
#: longitude at 45 degrees: more than any two 95 % radii worth an alert): ``same_shot`` decides.
_SAME_SHOT_PREFILTER_S = 60.0
_SAME_SHOT_PREFILTER_DEG = 0.05


async def version_place(pool: asyncpg.Pool, incident_id: str, version: int) -> Any:
    """The place words stored with one version (None: no layers then, or no such version)."""
    return _load(
        await pool.fetchval(
            """SELECT place::text FROM dispatch_incident_versions
               WHERE incident_id = $1 AND version = $2""",
            incident_id,
            version,
        )
    )


@dataclass(frozen=True)
class StoreResult:
    outcome: str  # "stored", "duplicate" (same id+version seen), "stale" (older than current)
    deliveries: list[PlannedDelivery]
    same_shot_as: tuple[str, ...] = ()  # other zones' incidents of the same shot


async def store_incident(
    pool: asyncpg.Pool,
    record: IncidentRecord,
    plan: Planner,
    *,
    partition: int | None = None,
    offset: int | None = None,
    same_shot: SameShot | None = None,
    place: dict[str, Any] | None = None,
    gate: Gate | None = None,
) -> StoreResult:
    """Store one incident version and its outbox rows in one transaction (idempotent).

    With ``same_shot``, other zones' incidents of the same shot are linked both ways
    (``same_shot_as``), and subscriptions alerted to any of them are left out of this
    incident's plan (unless already alerted to this incident itself: they then hear its
    updates), so no subscriber gets two alerts for one shot heard across a zone boundary.
    A sibling whose current version is a cancel does not count (its subscribers were told
    there was nothing); when this version is the cancel, its subscribers who heard of no
    standing sibling are sent one (:func:`_hand_over`). Stores are then serialised across
    instances (a transaction-scoped advisory lock) so that two instances cannot both miss
    each other's incident.

    ``place`` (the version's place words, :mod:`.places`) is stored with the version; a
    replayed version keeps the words it was first stored with.
    """
    doc = _json(record.model_dump(mode="json"))
    async with pool.acquire() as conn, conn.transaction():
        # One round trip: take the same-shot lock (if wanted) and read the active
        # subscriptions. Routing reads them as of the start of that statement: a
        # subscription created concurrently with an incident may or may not see it.
        subs = [
            _subscription(r)
            for r in await conn.fetch(
                f"""WITH lock AS MATERIALIZED (
                      SELECT pg_advisory_xact_lock($1) AS held WHERE $2::bool)
                    SELECT {_SUB_COLUMNS} FROM dispatch_subscriptions
                    WHERE (SELECT count(*) FROM lock) >= 0 AND status = 'active'""",
                _SAME_SHOT_LOCK,
                same_shot is not None,
            )
        ]
        # One statement: the version (history, idempotent) and the current state (only ever
        # moves forward). The row lock taken by the upsert serialises versions of one
        # incident, so the "is it newer" check cannot race.
        row = await conn.fetchrow(
            f"""WITH cur AS (
                 INSERT INTO dispatch_incidents AS i
                   (incident_id, version, event, zone, classification, gunfire_probability,
                    lat, lon, shot_time, first_detection_received_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
                 ON CONFLICT (incident_id) DO UPDATE SET
                   version = EXCLUDED.version, event = EXCLUDED.event, zone = EXCLUDED.zone,
                   classification = EXCLUDED.classification,
                   gunfire_probability = EXCLUDED.gunfire_probability,
                   lat = EXCLUDED.lat, lon = EXCLUDED.lon, shot_time = EXCLUDED.shot_time,
                   first_detection_received_at = EXCLUDED.first_detection_received_at,
                   record = EXCLUDED.record, updated_at = now()
                 WHERE i.version < EXCLUDED.version
                 RETURNING version),
               ver AS (
                 INSERT INTO dispatch_incident_versions
                   (incident_id, version, event, record, kafka_partition, kafka_offset,
                    place)
                 VALUES ($1, $2, $3, $11::jsonb, $12, $13, $14::jsonb)
                 ON CONFLICT (incident_id, version) DO NOTHING
                 RETURNING version)
               SELECT (SELECT version FROM cur) AS current, (SELECT version FROM ver) AS new,
                      (SELECT json_agg(json_build_object(
                                'sub', t.subscription_id, 'class', t.classification,
                                'cancelled', t.cancelled))::text
                       FROM ({_TOLD}) AS t) AS told""",
            record.incident_id,
            record.version,
            record.event,
            record.zone,
            record.classification,
            record.gunfire_probability,
            record.location.lat,
            record.location.lon,
            record.shot_time,
            record.first_detection_received_at,
            doc,
            partition,
            offset,
            None if place is None else _json(place),
        )
        assert row is not None
        if row["new"] is None:
            return StoreResult("duplicate", [])
        if row["current"] is None:
            # A newer version is already current: keep the history, alert nobody with the
            # older picture (they have, or will get, the newer one).
            return StoreResult("stale", [])
        notified = {
            t["sub"]: Told(t["class"], bool(t["cancelled"])) for t in _load(row["told"]) or []
        }
        active = subs
        siblings: tuple[str, ...] = ()
        if same_shot is not None:
            siblings = await _link_same_shot(conn, record, same_shot)
            if siblings:
                elsewhere = await _told_of(conn, siblings) - set(notified)
                subs = [s for s in active if s.subscription_id not in elsewhere]
        planned = plan(record, subs, notified)
        if gate is not None:
            planned = await gate(conn, record, subs, notified, planned)
        await _insert_outbox(conn, record, planned)
        if siblings and record.event == "cancelled":
            told_of_it = set(notified) | {p.subscription_id for p in planned}
            await _hand_over(
                conn, siblings, [s for s in active if s.subscription_id in told_of_it], plan
            )
    return StoreResult("stored", planned, siblings)


async def _insert_outbox(
    conn: asyncpg.Connection, record: IncidentRecord, planned: list[PlannedDelivery]
) -> None:
    """Write the outbox rows of one incident version (existing ones are kept); NOTIFY."""
    if not planned:
        return
    await conn.execute(
        f"""WITH rows AS (
              INSERT INTO dispatch_deliveries
                (subscription_id, incident_id, version, event, channel, endpoint,
                 webhook_id)
              SELECT sub, $1, $2, ev, ch, ep, wid
              FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                   AS t(sub, ch, ep, wid, ev)
              ON CONFLICT DO NOTHING
              RETURNING 1)
            SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM rows)""",
        record.incident_id,
        record.version,
        [p.subscription_id for p in planned],
        [p.channel for p in planned],
        [p.endpoint for p in planned],
        [p.webhook_id for p in planned],
        [p.event for p in planned],
    )


#: What every subscription planned an earlier version ($2) of the incident ($1) was told:
#: the class of the latest version planned to it, and whether a cancel was (a cancel
#: superseded unsent - nothing had gone out before it - does not count).
_TOLD = """SELECT d.subscription_id,
                  (array_agg(v.record->>'classification'
                             ORDER BY d.version DESC, d.generation DESC))[1] AS classification,
                  bool_or(d.event = 'cancelled'
                          AND (d.status <> 'superseded' OR d.attempts > 0)) AS cancelled
           FROM dispatch_deliveries d
           JOIN dispatch_incident_versions v USING (incident_id, version)
           WHERE d.incident_id = $1 AND d.version < $2
           GROUP BY d.subscription_id"""


async def _told_of(conn: asyncpg.Connection, incident_ids: Sequence[str]) -> set[str]:
    """Subscriptions with an outbox row (any version, any status) for any of the incidents."""
    rows = await conn.fetch(
        "SELECT DISTINCT subscription_id FROM dispatch_deliveries "
        "WHERE incident_id = ANY($1::text[])",
        list(incident_ids),
    )
    return {r["subscription_id"] for r in rows}


async def _hand_over(
    conn: asyncpg.Connection,
    siblings: tuple[str, ...],
    told_of_cancelled: list[SubscriptionRow],
    plan: Planner,
) -> None:
    """An incident was cancelled while other zones' incidents of its shot stand: those of
    its subscribers that heard of none of them are planned the first one's current version
    (as news: ``created``), so the cancel does not leave them believing nothing happened."""
    heard = await _told_of(conn, siblings)
    orphans = [s for s in told_of_cancelled if s.subscription_id not in heard]
    if not orphans:
        return
    raw = await conn.fetchval(
        "SELECT record::text FROM dispatch_incidents WHERE incident_id = $1", siblings[0]
    )
    standing = IncidentRecord.model_validate_json(raw)
    await _insert_outbox(conn, standing, plan(standing, orphans, {}))


#: Key of the advisory lock that serialises the same-shot check across instances.
_SAME_SHOT_LOCK = 0x5E0_5407


async def _link_same_shot(
    conn: asyncpg.Connection, record: IncidentRecord, same_shot: SameShot
) -> tuple[str, ...]:
    """Other zones' incidents of the same shot as ``record`` (already stored: call after
    the upsert), linked both ways in ``same_shot_as``; sorted ids."""
    rows = await conn.fetch(
        """SELECT record::text AS record FROM dispatch_incidents
           WHERE zone <> $1 AND incident_id <> $2 AND event <> 'cancelled'
             AND shot_time >= $3::timestamptz - make_interval(secs => $5)
             AND shot_time <= $4::timestamptz + make_interval(secs => $6)
             AND lat BETWEEN $7::float8 - $9 AND $7::float8 + $9
             AND lon BETWEEN $8::float8 - $9 AND $8::float8 + $9""",
        record.zone,
        record.incident_id,
        record.shot_time,
        record.last_shot_time,
        _SAME_SHOT_LOOKBACK_S,
        _SAME_SHOT_PREFILTER_S,
        record.location.lat,
        record.location.lon,
        _SAME_SHOT_PREFILTER_DEG,
    )
    siblings = sorted(
        other.incident_id
        for other in (IncidentRecord.model_validate_json(r["record"]) for r in rows)
        if same_shot(record, other)
    )
    if siblings:
        await conn.execute(
            """UPDATE dispatch_incidents SET same_shot_as = ARRAY(
                 SELECT DISTINCT x FROM unnest(same_shot_as || CASE
                   WHEN incident_id = $1 THEN $2::text[] ELSE ARRAY[$1] END) AS x ORDER BY x)
               WHERE incident_id = $1 OR incident_id = ANY($2::text[])""",
            record.incident_id,
            siblings,
        )
    return tuple(siblings)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A claimed outbox row with everything needed to send it."""

    delivery_id: int
    claim_token: str
    subscription_id: str
    incident_id: str
    version: int
    event: str  # what this message tells (decided at claim: see ordering.decide_pair)
    channel: str
    endpoint: str
    webhook_id: str
    attempts: int  # finished attempts so far (all time)
    budget_attempts: int  # finished attempts since the last replay (for the retry policy)
    created_at: datetime
    first_attempt_at: datetime | None  # since the last replay (the retry age limit counts)
    record: dict[str, Any]
    previous: dict[str, Any] | None  # the latest version that may have reached it before
    sub_status: str
    format: str
    url: str | None
    push: dict[str, Any] | None
    secrets: list[tuple[str, datetime | None]]  # (secret, valid_until), newest first
    #: CAP references of every earlier message that may have reached the subscriber
    references: tuple[str, ...] = ()
    body: bytes | None = None  # as rendered for the first send (None: not rendered yet)
    content_type: str | None = None
    place: dict[str, Any] | None = None  # the version's place words (None: no layers)


@dataclass(frozen=True)
class ClaimBatch:
    """What one :func:`claim_due` claimed and decided; :func:`confirm` carries it out."""

    token: str = ""
    #: rows to send (their event, references and previous version decided)
    deliveries: list[ClaimedDelivery] = field(default_factory=list)
    #: claimed rows not to send now (another row of the pair is in flight): released
    waits: list[int] = field(default_factory=list)
    #: (id, reason, head id or None): stale rows superseded once the head (if given) is
    #: confirmed; claimed heads that are dropped outright name no head
    superseded: list[tuple[int, str, int | None]] = field(default_factory=list)
    #: (superseded row, generation, event): versions planned again as new rows
    replans: list[tuple[ClaimedDelivery, int, str]] = field(default_factory=list)
    #: due rows claimed (if it equals the limit, more are probably due)
    looked_at: int = 0

    @property
    def changed(self) -> int:
        return len(self.superseded) + len(self.replans)


async def claim_due(
    pool: asyncpg.Pool,
    *,
    limit: int,
    lease_s: float,
    owner: str,
    exclude_endpoints: Sequence[str] = (),
) -> ClaimBatch:
    """Claim up to ``limit`` due rows for ``lease_s`` seconds and decide what each means.

    Only the newest pending row of a (subscription, incident) pair with no row in flight is
    a candidate (``FOR UPDATE SKIP LOCKED``: a row goes to one claimer). Its pair's rows come
    back with it, and :func:`~services.dispatch.ordering.decide_pair` decides: send it (as
    which event, with which references), supersede stale rows, drop or re-plan it. Nothing
    of that is written yet: render what is to be sent, then :func:`confirm`.

    Rows for ``exclude_endpoints`` (saturated or circuit-open receivers of this instance) are
    left for later, so they never occupy this instance's send slots.
    """
    token = f"{owner}:{secrets.token_hex(6)}"
    # One round trip: claim and read everything the decision and the send need.
    rows = await pool.fetch(
        """WITH due AS (
             SELECT d.delivery_id FROM dispatch_deliveries d
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               AND (d.claimed_until IS NULL OR d.claimed_until < now())
               AND NOT (d.endpoint = ANY($4::text[]))
               -- (a scalar subquery, not NOT EXISTS: an anti-join would hash every pending
               -- row; this probes the pair index for the rows the due index hands over)
               AND (SELECT 1 FROM dispatch_deliveries o
                    WHERE o.subscription_id = d.subscription_id
                      AND o.incident_id = d.incident_id AND o.status = 'pending'
                      AND (o.claimed_until >= now()
                           OR (o.version, o.generation) > (d.version, d.generation))
                    LIMIT 1) IS NULL
             ORDER BY d.next_attempt_at, d.delivery_id
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED)
           UPDATE dispatch_deliveries d
           SET claimed_until = now() + make_interval(secs => $2), claim_token = $3
           FROM due, dispatch_incident_versions v, dispatch_subscriptions s
           WHERE d.delivery_id = due.delivery_id
             AND d.status = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until < now())
             AND v.incident_id = d.incident_id AND v.version = d.version
             AND s.subscription_id = d.subscription_id
           RETURNING d.delivery_id, d.subscription_id, d.incident_id, d.version, d.generation,
                     d.event, d.channel, d.endpoint, d.webhook_id, d.attempts, d.replay_base,
                     d.created_at, d.first_attempt_at, d.next_attempt_at, v.record::text AS record,
                     v.place::text AS place,
                     d.body, d.content_type, d.rendered_format, d.rendered_url, d.message_ref,
                     s.status AS sub_status, s.format, s.url, s.push::text AS push, now() AS now,
                     (SELECT json_agg(json_build_object(
                               'id', h.delivery_id, 'version', h.version,
                               'generation', h.generation, 'event', h.event,
                               'status', h.status, 'attempts', h.attempts,
                               'next', h.next_attempt_at, 'claimed', h.claimed_until,
                               'format', h.rendered_format, 'url', h.rendered_url,
                               'ref', h.message_ref,
                               'record', CASE WHEN h.attempts > 0 THEN hv.record END))::text
                      FROM dispatch_deliveries h
                      JOIN dispatch_incident_versions hv USING (incident_id, version)
                      WHERE h.subscription_id = d.subscription_id
                        AND h.incident_id = d.incident_id
                        AND h.delivery_id <> d.delivery_id) AS history,
                     ARRAY(SELECT k.secret FROM dispatch_subscription_secrets k
                           WHERE k.subscription_id = s.subscription_id
                             AND (k.valid_until IS NULL OR k.valid_until > now())
                           ORDER BY k.secret_id DESC) AS secrets,
                     ARRAY(SELECT k.valid_until FROM dispatch_subscription_secrets k
                           WHERE k.subscription_id = s.subscription_id
                             AND (k.valid_until IS NULL OR k.valid_until > now())
                           ORDER BY k.secret_id DESC) AS secrets_until""",
        limit,
        lease_s,
        token,
        list(exclude_endpoints),
    )
    batch = ClaimBatch(token=token, looked_at=len(rows))
    for r in rows:
        _decide_claimed(batch, r)
    return batch


def _decide_claimed(batch: ClaimBatch, r: asyncpg.Record) -> None:
    """Apply :func:`decide_pair` to one claimed head and its pair's other rows."""
    history = _load(r["history"]) or []
    head = PairRow(
        delivery_id=r["delivery_id"],
        version=r["version"],
        event=r["event"],
        status="pending",
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        claimed_until=None,  # ours
        generation=r["generation"],
        rendered_as=None
        if r["rendered_format"] is None
        else (r["rendered_format"], r["rendered_url"]),
        message_ref=r["message_ref"],
    )
    others = [
        PairRow(
            delivery_id=h["id"],
            version=h["version"],
            event=h["event"],
            status=h["status"],
            attempts=h["attempts"],
            next_attempt_at=_when(h["next"]),
            claimed_until=_when(h["claimed"]),
            generation=h["generation"],
            rendered_as=None if h["format"] is None else (h["format"], h["url"]),
            message_ref=h["ref"],
        )
        for h in history
    ]
    decision = decide_pair([head, *others], format=r["format"], url=r["url"], now=r["now"])
    delivery = ClaimedDelivery(
        delivery_id=r["delivery_id"],
        claim_token=batch.token,
        subscription_id=r["subscription_id"],
        incident_id=r["incident_id"],
        version=r["version"],
        event=r["event"],
        channel=r["channel"],
        endpoint=r["endpoint"],
        webhook_id=r["webhook_id"],
        attempts=r["attempts"],
        budget_attempts=r["attempts"] - r["replay_base"],
        created_at=r["created_at"],
        first_attempt_at=r["first_attempt_at"],
        record=_load(r["record"]),
        previous=None,
        sub_status=r["sub_status"],
        format=r["format"],
        url=r["url"],
        push=_load(r["push"]),
        secrets=list(zip(r["secrets"], r["secrets_until"], strict=True)),
        body=r["body"],
        content_type=r["content_type"],
        place=_load(r["place"]),
    )
    send = decision.send
    head_sent = send is not None and send.delivery_id == head.delivery_id
    dropped = {s.delivery_id for s in decision.supersede} | (
        {decision.replan.delivery_id} if decision.replan else set()
    )
    for s in decision.supersede:
        # stale rows go once the head is confirmed; a dropped head (ours) goes at once
        waits_for = head.delivery_id if head_sent and s.delivery_id != head.delivery_id else None
        batch.superseded.append((s.delivery_id, s.reason, waits_for))
    if decision.replan is not None:
        batch.superseded.append((decision.replan.delivery_id, decision.replan.reason, None))
        batch.replans.append((delivery, decision.replan.generation, decision.replan.event))
    if head_sent:
        assert send is not None
        previous = next(
            (h["record"] for h in history if h["version"] == send.previous_version and h["record"]),
            None,
        )
        batch.deliveries.append(
            dataclasses.replace(
                delivery, event=send.event, references=send.references, previous=previous
            )
        )
    elif head.delivery_id not in dropped:
        batch.waits.append(head.delivery_id)  # e.g. a row of its pair went in flight meanwhile


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Rendering:
    """The body of a claimed webhook row as first sent, and what it was rendered for."""

    body: bytes
    content_type: str
    format: str
    url: str | None
    message_ref: str | None  # CAP sender,identifier,sent (None for other formats)


async def confirm(
    pool: asyncpg.Pool,
    batch: ClaimBatch,
    renderings: Mapping[int, Rendering],
    *,
    failed: Sequence[int] = (),
) -> list[ClaimedDelivery]:
    """Write what :func:`claim_due` decided and return the rows to send now.

    A row to send is confirmed only if no other row of its pair is in flight - checked
    *after* both claims committed, so of two workers that claimed two rows of one pair at
    once (one of them before seeing a newer version), at least one sees the other and gives
    its row back: never two at once. Its first rendering (``renderings``, by id) is stored
    with it: a webhook-id never names two bodies. Stale rows of a confirmed head, dropped
    heads and re-planned rows are superseded; re-planned versions get their new rows;
    claimed rows not sent (waits, unconfirmed) are given back. ``failed``: claimed rows
    already finished as failed (they are left alone).
    """
    skip = set(failed)
    sends = [d for d in batch.deliveries if d.delivery_id not in skip]
    send_rendered = [renderings.get(d.delivery_id) for d in sends]
    rows = await pool.fetch(
        """WITH t AS (
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::text[])
                    AS t(id, body, ct, fmt, url, ref, event)),
           ok AS (
             UPDATE dispatch_deliveries d SET
               body = COALESCE(d.body, t.body), content_type = COALESCE(d.content_type, t.ct),
               rendered_format = COALESCE(d.rendered_format, t.fmt),
               rendered_url = CASE WHEN d.body IS NULL THEN t.url ELSE d.rendered_url END,
               message_ref = COALESCE(d.message_ref, t.ref),
               rendered_at = COALESCE(d.rendered_at, CASE WHEN t.body IS NOT NULL
                                                          THEN now() END),
               event = t.event
             FROM t
             WHERE d.delivery_id = t.id AND d.claim_token = $8
               AND NOT EXISTS (
                 SELECT 1 FROM dispatch_deliveries o
                 WHERE o.subscription_id = d.subscription_id
                   AND o.incident_id = d.incident_id AND o.delivery_id <> d.delivery_id
                   AND o.status = 'pending' AND o.claimed_until >= now())
             RETURNING d.delivery_id),
           sup AS (
             UPDATE dispatch_deliveries d
             SET status = 'superseded', last_error = s.reason,
                 claimed_until = NULL, claim_token = NULL
             FROM unnest($9::bigint[], $10::text[], $11::bigint[]) AS s(id, reason, head)
             WHERE d.delivery_id = s.id AND d.status = 'pending'
               AND ((s.head IS NULL AND d.claim_token = $8)
                    OR ((d.claimed_until IS NULL OR d.claimed_until < now())
                        AND (s.head IS NULL OR s.head IN (SELECT delivery_id FROM ok))))
             RETURNING d.delivery_id),
           ins AS (
             INSERT INTO dispatch_deliveries
               (subscription_id, incident_id, version, generation, event, channel, endpoint,
                webhook_id)
             SELECT * FROM unnest($12::text[], $13::text[], $14::int[], $15::int[],
                                  $16::text[], $17::text[], $18::text[], $19::text[])
             ON CONFLICT DO NOTHING
             RETURNING 1),
           rel AS (
             UPDATE dispatch_deliveries d SET claimed_until = NULL, claim_token = NULL
             WHERE d.delivery_id = ANY($20::bigint[]) AND d.claim_token = $8
               AND d.delivery_id NOT IN (SELECT delivery_id FROM ok)
               AND d.delivery_id <> ALL($9::bigint[])
             RETURNING 1)
           SELECT delivery_id, (SELECT count(*) FROM ins) AS inserted,
                  (SELECT count(*) FROM rel) AS released,
                  (SELECT count(*) FROM sup) AS superseded
           FROM ok""",
        [d.delivery_id for d in sends],
        [None if r is None else r.body for r in send_rendered],
        [None if r is None else r.content_type for r in send_rendered],
        [None if r is None else r.format for r in send_rendered],
        [None if r is None else r.url for r in send_rendered],
        [None if r is None else r.message_ref for r in send_rendered],
        [d.event for d in sends],
        batch.token,
        [s[0] for s in batch.superseded],
        [s[1] for s in batch.superseded],
        [s[2] for s in batch.superseded],
        [d.subscription_id for d, _, _ in batch.replans],
        [d.incident_id for d, _, _ in batch.replans],
        [d.version for d, _, _ in batch.replans],
        [g for _, g, _ in batch.replans],
        [e for _, _, e in batch.replans],
        [d.channel for d, _, _ in batch.replans],
        [endpoint_key(d.url) if d.url else d.endpoint for d, _, _ in batch.replans],
        [webhook_id(d.subscription_id, d.incident_id, d.version, g) for d, g, _ in batch.replans],
        [d.delivery_id for d in sends] + batch.waits,
    )
    confirmed = {r["delivery_id"] for r in rows}
    out = []
    for d, r in zip(sends, send_rendered, strict=True):
        if d.delivery_id not in confirmed:
            continue
        if r is not None and d.body is None:
            d = dataclasses.replace(d, body=r.body, content_type=r.content_type)
        out.append(d)
    if batch.replans:
        await pool.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return out


@dataclass(frozen=True)
class AttemptResult:
    """One finished attempt and what to do with the row next."""

    started_at: datetime
    finished_at: datetime
    duration_s: float
    status_code: int | None
    error: str | None
    outcome: str  # delivered, retry, failed, dead
    next_attempt_at: datetime | None = None  # for "retry"


async def finish_attempt(
    pool: asyncpg.Pool, delivery: ClaimedDelivery, result: AttemptResult
) -> bool:
    """Record the attempt and move the row on; False if our lease was lost (nothing written)."""
    return delivery.delivery_id in await finish_attempts(pool, [(delivery, result)])


async def finish_attempts(
    pool: asyncpg.Pool, finished: Sequence[tuple[ClaimedDelivery, AttemptResult]]
) -> set[int]:
    """:func:`finish_attempt` for many rows in one statement; returns the ids written (a row
    whose lease was lost is left alone)."""
    if not finished:
        return set()
    # One statement (atomic on its own, one round trip): move the rows on, log the attempts.
    rows = await pool.fetch(
        """WITH t AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[],
                                  $5::int[], $6::text[], $7::timestamptz[],
                                  $8::timestamptz[], $9::float8[], $10::text[])
                    AS t(id, token, status, next_at, code, error, started, finished,
                         duration, outcome)),
           moved AS (
             UPDATE dispatch_deliveries d SET
               status = t.status, attempts = d.attempts + 1,
               next_attempt_at = COALESCE(t.next_at, d.next_attempt_at),
               claimed_until = NULL, claim_token = NULL,
               last_status_code = t.code, last_error = t.error,
               first_attempt_at = COALESCE(d.first_attempt_at, t.started),
               delivered_at = CASE WHEN t.status = 'delivered' THEN t.finished
                                   ELSE d.delivered_at END
             FROM t
             WHERE d.delivery_id = t.id AND d.claim_token = t.token
             RETURNING d.delivery_id, d.attempts)
           INSERT INTO dispatch_delivery_attempts
             (delivery_id, attempt_no, started_at, finished_at, status_code, error,
              duration_s, outcome)
           SELECT m.delivery_id, m.attempts, t.started, t.finished, t.code, t.error,
                  t.duration, t.outcome
           FROM moved m JOIN t ON t.id = m.delivery_id
           RETURNING delivery_id""",
        [d.delivery_id for d, _ in finished],
        [d.claim_token for d, _ in finished],
        ["pending" if r.outcome == "retry" else r.outcome for _, r in finished],
        [r.next_attempt_at for _, r in finished],
        [r.status_code for _, r in finished],
        [r.error for _, r in finished],
        [r.started_at for _, r in finished],
        [r.finished_at for _, r in finished],
        [r.duration_s for _, r in finished],
        [r.outcome for _, r in finished],
    )
    return {r["delivery_id"] for r in rows}


async def defer(
    pool: asyncpg.Pool, delivery: ClaimedDelivery, until: datetime, reason: str
) -> bool:
    """Give a claimed row back unsent, due again at ``until`` (no attempt is counted)."""
    done = await pool.fetchval(
        """UPDATE dispatch_deliveries
           SET next_attempt_at = $3, claimed_until = NULL, claim_token = NULL, last_error = $4
           WHERE delivery_id = $1 AND claim_token = $2 RETURNING 1""",
        delivery.delivery_id,
        delivery.claim_token,
        until,
        reason,
    )
    return done is not None


async def release(pool: asyncpg.Pool, delivery: ClaimedDelivery) -> None:
    """Drop our claim at once (shutdown): the row is due again for any worker."""
    await pool.execute(
        "UPDATE dispatch_deliveries SET claimed_until = NULL, claim_token = NULL "
        "WHERE delivery_id = $1 AND claim_token = $2",
        delivery.delivery_id,
        delivery.claim_token,
    )


async def release_many(pool: asyncpg.Pool, deliveries: Sequence[ClaimedDelivery]) -> None:
    """Give claimed rows back unsent and due at once (e.g. their receiver has no free slot)."""
    if not deliveries:
        return
    await pool.execute(
        """UPDATE dispatch_deliveries SET claimed_until = NULL, claim_token = NULL
           FROM unnest($1::bigint[], $2::text[]) AS t(id, token)
           WHERE delivery_id = t.id AND claim_token = t.token""",
        [d.delivery_id for d in deliveries],
        [d.claim_token for d in deliveries],
    )


@dataclass(frozen=True)
class ExpiredDelivery:
    """A pending row moved to dead letter by :func:`expire_overdue`."""

    delivery_id: int
    channel: str
    endpoint: str
    webhook_id: str


async def expire_overdue(pool: asyncpg.Pool, *, max_age_s: float) -> list[ExpiredDelivery]:
    """Move to dead letter every pending row older than ``max_age_s`` that no live lease
    holds; returns them.

    The age counts from the first attempt of the row's current retry budget, or, for a row
    not attempted since it was queued or replayed, from then. Why: the retry policy judges a
    row's age only after an attempt, and rows whose receiver's circuit breaker is open are
    neither claimed nor attempted; without this they would wait as long as the receiver is
    down, out of sight of the dead-letter gauge, and then be sent days late. A row whose
    lease ran out while its send still hangs is expired too; if that send ends after all, its
    result overwrites the status (``finish_attempt`` goes by the claim token).
    """
    rows = await pool.fetch(
        """UPDATE dispatch_deliveries
           SET status = 'dead',
               last_error = 'not delivered within the age limit (' || $1::text
                            || ' s); receiver unreachable or its circuit open'
           WHERE status = 'pending'
             AND (claimed_until IS NULL OR claimed_until < now())
             AND COALESCE(first_attempt_at, replayed_at, created_at)
                 + make_interval(secs => $2) < now()
           RETURNING delivery_id, channel, endpoint, webhook_id""",
        f"{max_age_s:g}",
        max_age_s,
    )
    return [
        ExpiredDelivery(r["delivery_id"], r["channel"], r["endpoint"], r["webhook_id"])
        for r in rows
    ]


async def fail_pending_of(conn: Conn, subscription_id: str, reason: str) -> int:
    """Mark a disabled subscription's unclaimed pending rows failed; returns how many."""
    result = await conn.execute(
        """UPDATE dispatch_deliveries SET status = 'failed', last_error = $2
           WHERE subscription_id = $1 AND status = 'pending'
             AND (claimed_until IS NULL OR claimed_until < now())""",
        subscription_id,
        reason,
    )
    return int(result.split()[-1])


# --------------------------------------------------------------------------------------------
# Reading deliveries, replay
# --------------------------------------------------------------------------------------------

_DELIVERY_COLUMNS = (
    "delivery_id, subscription_id, incident_id, version, generation, event, channel, endpoint, "
    "webhook_id, "
    "status, attempts, next_attempt_at, claimed_until, last_status_code, last_error, "
    "created_at, first_attempt_at, delivered_at, replayed_at"
)


async def list_deliveries(
    conn: Conn,
    *,
    status: str | None = None,
    subscription_id: str | None = None,
    incident_id: str | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[dict[str, Any]]:
    """Deliveries by id; ``status="undelivered"`` = failed and dead (what did not arrive)."""
    rows = await conn.fetch(
        f"""SELECT {_DELIVERY_COLUMNS} FROM dispatch_deliveries
            WHERE ($1::text IS NULL OR status = $1
                   OR ($1 = 'undelivered' AND status IN ('failed', 'dead')))
              AND ($2::text IS NULL OR subscription_id = $2)
              AND ($3::text IS NULL OR incident_id = $3)
              AND delivery_id > $5
            ORDER BY delivery_id LIMIT $4""",
        status,
        subscription_id,
        incident_id,
        limit,
        after_id,
    )
    return [dict(r) for r in rows]


async def get_delivery(conn: Conn, delivery_id: int) -> dict[str, Any] | None:
    """One delivery with its attempts (oldest first), or None."""
    row = await conn.fetchrow(
        f"SELECT {_DELIVERY_COLUMNS} FROM dispatch_deliveries WHERE delivery_id = $1",
        delivery_id,
    )
    if row is None:
        return None
    attempts = await conn.fetch(
        """SELECT attempt_no, started_at, finished_at, status_code, error, duration_s, outcome
           FROM dispatch_delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_no""",
        delivery_id,
    )
    return {**dict(row), "attempt_log": [dict(a) for a in attempts]}


async def replay(
    conn: Conn,
    *,
    delivery_id: int | None = None,
    status: str = "dead",
    subscription_id: str | None = None,
    incident_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[int]:
    """Make matching dead/failed rows due now with a fresh retry budget; same webhook-id.

    ``status``: ``dead``, ``failed`` or ``undelivered`` (both: what did not arrive). Only
    rows whose subscription is active are replayed. Returns the replayed ids.
    """
    rows = await conn.fetch(
        """UPDATE dispatch_deliveries d SET
             status = 'pending', next_attempt_at = now(), replay_base = attempts,
             replayed_at = now(), claimed_until = NULL, claim_token = NULL,
             first_attempt_at = NULL
           FROM dispatch_subscriptions s
           WHERE s.subscription_id = d.subscription_id AND s.status = 'active'
             AND (d.status = $2 OR $2 = 'undelivered') AND d.status IN ('dead', 'failed')
             AND ($1::bigint IS NULL OR d.delivery_id = $1)
             AND ($3::text IS NULL OR d.subscription_id = $3)
             AND ($4::text IS NULL OR d.incident_id = $4)
             AND ($5::timestamptz IS NULL OR d.created_at >= $5)
             AND ($6::timestamptz IS NULL OR d.created_at < $6)
           RETURNING d.delivery_id""",
        delivery_id,
        status,
        subscription_id,
        incident_id,
        since,
        until,
    )
    if rows:
        await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return sorted(r["delivery_id"] for r in rows)


async def delivery_status(conn: Conn, delivery_id: int) -> str | None:
    return await conn.fetchval(
        "SELECT status FROM dispatch_deliveries WHERE delivery_id = $1", delivery_id
    )


async def counts(conn: Conn) -> dict[str, int]:
    """Deliveries per status (for the queue-depth and dead-letter gauges)."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM dispatch_deliveries GROUP BY 1")
    return {r["status"]: int(r["n"]) for r in rows}


# --------------------------------------------------------------------------------------------
# Incidents (read side) and outcomes
# --------------------------------------------------------------------------------------------


async def list_incidents(
    conn: Conn, *, limit: int = 100, zone: str | None = None, before: datetime | None = None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT incident_id, version, event, zone, classification, gunfire_probability,
                  lat, lon, shot_time, first_detection_received_at, first_consumed_at,
                  updated_at
           FROM dispatch_incidents
           WHERE ($2::text IS NULL OR zone = $2)
             AND ($3::timestamptz IS NULL OR shot_time < $3)
           ORDER BY shot_time DESC, incident_id LIMIT $1""",
        limit,
        zone,
        before,
    )
    return [dict(r) for r in rows]


async def get_incident(conn: Conn, incident_id: str) -> dict[str, Any] | None:
    """Current record, every version as received, every delivery; None if unknown."""
    row = await conn.fetchrow(
        """SELECT incident_id, version, event, record::text AS record, first_consumed_at,
                  updated_at, same_shot_as
           FROM dispatch_incidents WHERE incident_id = $1""",
        incident_id,
    )
    if row is None:
        return None
    versions = await conn.fetch(
        """SELECT version, event, record::text AS record, kafka_partition, kafka_offset,
                  consumed_at, place::text AS place
           FROM dispatch_incident_versions WHERE incident_id = $1 ORDER BY version""",
        incident_id,
    )
    deliveries = await list_deliveries(conn, incident_id=incident_id, limit=10_000)
    return {
        **dict(row),
        "record": _load(row["record"]),
        "versions": [
            {**dict(v), "record": _load(v["record"]), "place": _load(v["place"])}
            for v in versions
        ],
        "deliveries": deliveries,
    }


#: Outcome columns beyond the original feedback: the CAD linkage (``POST .../outcome`` and
#: ``shotline outcomes import``).
CAD_FIELDS = (
    "cad_event_number",
    "entry_time",
    "dispatch_time",
    "on_scene_time",
    "clear_time",
    "units",
    "initial_priority",
    "final_priority",
    "final_call_type",
    "finding",
    "report_taken",
)


async def add_outcome(
    pool: asyncpg.Pool,
    incident_id: str,
    *,
    units_dispatched: int,
    arrival_time: datetime | None,
    evidence: Sequence[str],
    call_911: bool,
    disposition: str,
    cad: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Append the next outcome version; None if the incident is unknown.

    ``cad`` holds any of :data:`CAD_FIELDS` (unknown keys are a ValueError)."""
    row = {
        "incident_id": incident_id,
        "units_dispatched": units_dispatched,
        "arrival_time": arrival_time,
        "evidence": list(evidence),
        "call_911": call_911,
        "disposition": disposition,
        **(cad or {}),
    }
    async with pool.acquire() as conn, conn.transaction():
        # Row lock: concurrent POSTs for one incident get consecutive versions.
        exists = await conn.fetchval(
            "SELECT 1 FROM dispatch_incidents WHERE incident_id = $1 FOR UPDATE", incident_id
        )
        if not exists:
            return None
        stored = await insert_outcome_version(conn, row, source="api", import_key=None)
    return _outcome(stored)


def _outcome(row: asyncpg.Record) -> dict[str, Any]:
    return {**dict(row), "evidence": list(row["evidence"]), "units": list(row["units"])}


async def insert_outcome_version(
    conn: asyncpg.Connection, row: Mapping[str, Any], *, source: str, import_key: str | None
) -> asyncpg.Record:
    """Append the next outcome version of ``row["incident_id"]`` (the caller holds the
    incident's row lock). Missing CAD fields are NULL / empty; ``units_dispatched``
    defaults to the number of units, ``arrival_time`` to the on-scene time."""
    unknown = (
        set(row)
        - set(CAD_FIELDS)
        - {"incident_id", "units_dispatched", "arrival_time", "evidence", "call_911", "disposition"}
    )
    if unknown:
        raise ValueError(f"not outcome fields: {sorted(unknown)}")
    units = list(row.get("units") or [])
    stored = await conn.fetchrow(
        """INSERT INTO dispatch_incident_outcomes
             (incident_id, outcome_version, units_dispatched, arrival_time, evidence, call_911,
              disposition, cad_event_number, entry_time, dispatch_time, on_scene_time,
              clear_time, units, initial_priority, final_priority, final_call_type, finding,
              report_taken, source, import_key)
           SELECT $1, COALESCE(MAX(outcome_version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9,
                  $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
           FROM dispatch_incident_outcomes WHERE incident_id = $1
           RETURNING *""",
        row["incident_id"],
        row.get("units_dispatched", len(units)),
        row.get("arrival_time") or row.get("on_scene_time"),
        list(row.get("evidence") or ["none"]),
        bool(row.get("call_911", False)),
        row.get("disposition") or "",
        row.get("cad_event_number"),
        row.get("entry_time"),
        row.get("dispatch_time"),
        row.get("on_scene_time"),
        row.get("clear_time"),
        units,
        row.get("initial_priority"),
        row.get("final_priority"),
        row.get("final_call_type"),
        row.get("finding"),
        bool(row.get("report_taken", False)),
        source,
        import_key,
    )
    assert stored is not None
    return stored


async def list_outcomes(conn: Conn, incident_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM dispatch_incident_outcomes WHERE incident_id = $1 ORDER BY outcome_version",
        incident_id,
    )
    return [_outcome(r) for r in rows]


async def incident_exists(conn: Conn, incident_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT 1 FROM dispatch_incidents WHERE incident_id = $1", incident_id)
    )


async def ping(conn: Conn) -> None:
    await conn.fetchval("SELECT 1")


# --------------------------------------------------------------------------------------------
# The shot-to-alert SLO (see services.dispatch.slo)
# --------------------------------------------------------------------------------------------

#: Rows that did not (yet) arrive: still being tried, refused for good, or dead-lettered.
UNDELIVERED = ("pending", "failed", "dead")

#: When an alert was due: a subscriber's first message of an incident from its first shot,
#: any later one from the latest round (the round that caused it).
_ALERT_DUE_AT = """CASE WHEN d.event = 'created'
        THEN (v.record->>'shot_time')::timestamptz
        ELSE (v.record->>'last_shot_time')::timestamptz END"""

#: Subscriptions an operator switched off on purpose: their rows no longer page anyone.
OPERATOR_DISABLED = "disabled by an operator"


@dataclass(frozen=True)
class UndeliveredAge:
    subscription_id: str
    oldest_due_at: datetime
    undelivered: int


async def oldest_undelivered(conn: Conn) -> list[UndeliveredAge]:
    """Per subscription (but those an operator disabled), the due time of its oldest alert
    that did not arrive (pending, failed or dead) and how many there are."""
    rows = await conn.fetch(
        f"""SELECT d.subscription_id, min({_ALERT_DUE_AT}) AS oldest, count(*) AS n
            FROM dispatch_deliveries d
            JOIN dispatch_incident_versions v USING (incident_id, version)
            JOIN dispatch_subscriptions s USING (subscription_id)
            WHERE d.status = ANY($1::text[])
              AND (s.status = 'active' OR s.disabled_reason IS DISTINCT FROM $2)
            GROUP BY d.subscription_id""",
        list(UNDELIVERED),
        OPERATOR_DISABLED,
    )
    return [UndeliveredAge(r["subscription_id"], r["oldest"], int(r["n"])) for r in rows]


async def mark_slo_breaches(conn: Conn, *, slo_s: float) -> list[str]:
    """Mark every undelivered row whose alert is more than ``slo_s`` past due as breached
    (once); returns the events of the rows marked now (``created`` = a first alert)."""
    rows = await conn.fetch(
        f"""UPDATE dispatch_deliveries d SET slo_breached_at = now()
            FROM dispatch_incident_versions v
            WHERE v.incident_id = d.incident_id AND v.version = d.version
              AND d.slo_breached_at IS NULL AND d.status = ANY($1::text[])
              AND {_ALERT_DUE_AT} < now() - make_interval(secs => $2)
            RETURNING d.event""",
        list(UNDELIVERED),
        slo_s,
    )
    return [r["event"] for r in rows]


async def mark_slo_breach(conn: Conn, delivery_id: int) -> bool:
    """Mark one (late) row breached; False if it was already counted."""
    marked = await conn.fetchval(
        """UPDATE dispatch_deliveries SET slo_breached_at = now()
           WHERE delivery_id = $1 AND slo_breached_at IS NULL RETURNING delivery_id""",
        delivery_id,
    )
    return marked is not None


async def disabled_by_receivers(conn: Conn) -> list[tuple[str, str]]:
    """(subscription id, reason) of subscriptions switched off by dispatch itself (a 410)."""
    rows = await conn.fetch(
        """SELECT subscription_id, coalesce(disabled_reason, '') AS reason
           FROM dispatch_subscriptions
           WHERE status = 'disabled' AND disabled_reason IS DISTINCT FROM $1""",
        OPERATOR_DISABLED,
    )
    return [(r["subscription_id"], r["reason"]) for r in rows]
