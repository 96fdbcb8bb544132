"""Kafka incidents → Postgres (incident versions + outbox rows), then commit the offset.

The chain per message is: decode → store (one transaction: version, current state, outbox
rows) → advance the offset; offsets are committed after each fetched batch, i.e. only after
the database commit of every message below them. A crash anywhere re-delivers messages
whose offsets were not committed, and :func:`store.store_incident` makes that harmless.

Poison (undecodable, unknown schema version) goes to ``<topic>.dlq`` under the dead-letter
budget. Database errors are transient: the same message is retried with capped backoff until
``db_retry_deadline_s`` passes, then the consumer raises (the supervisor restarts it; the
offset was not committed, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError

from services.dispatch import holds, metrics, store
from services.dispatch.model import Subscription
from services.dispatch.places import PlaceIndex
from services.dispatch.routing import GUNFIRE_CLASSES, Told, route, same_shot
from services.dispatch.settings import DispatchSettings
from shared.clock import Clock
from shared.kafka import (
    CommitBeforeRevoke,
    CommitPolicy,
    DeadLetterBudget,
    TopicPartition,
    build_consumer,
    build_producer,
    send_dead_letter,
)
from shared.schemas import IncidentRecord

log = logging.getLogger("shotline.dispatch.consumer")

_TRANSIENT = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class PoisonMessage(ValueError):
    """A message that can never be processed (bad JSON, schema, or version)."""


def decode(value: bytes | None) -> IncidentRecord:
    """The incident in a message value. Raises :class:`PoisonMessage`."""
    if value is None:
        raise PoisonMessage("empty value (tombstone)")
    try:
        return IncidentRecord.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise PoisonMessage(f"not an IncidentRecord: {where}: {first['msg']}") from exc


class SubscriptionCache:
    """Domain :class:`Subscription` objects per (id, updated_at): geofences are parsed and
    prepared once per change, not once per incident."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[object, Subscription | None]] = {}

    def domain(self, rows: list[store.SubscriptionRow]) -> list[Subscription]:
        out: list[Subscription] = []
        for row in rows:
            cached = self._by_id.get(row.subscription_id)
            if cached is None or cached[0] != row.updated_at:
                cached = (row.updated_at, self._build(row))
                self._by_id[row.subscription_id] = cached
            if cached[1] is not None:
                out.append(cached[1])
        return out

    @staticmethod
    def _build(row: store.SubscriptionRow) -> Subscription | None:
        try:
            return Subscription(
                subscription_id=row.subscription_id,
                channel=row.channel,  # type: ignore[arg-type]
                geofence=row.geofence,
                classes=frozenset(row.classes),
                min_probability=row.min_probability,
                events=frozenset(row.events),
                format=row.format,  # type: ignore[arg-type]
                enabled=row.status == "active",
                url=row.url,
                push=row.push,
                name=row.name,
                updated_at=row.updated_at,
                review=row.review,
            )
        except ValueError:
            # The API validates the same way, so only a hand-edited row gets here.
            log.error(
                "subscription is invalid; it gets no alerts",
                extra={"subscription_id": row.subscription_id},
                exc_info=True,
            )
            return None


def make_planner(clock: Clock) -> store.Planner:
    """The outbox planner run inside the consumer's transaction (routing is pure)."""
    cache = SubscriptionCache()

    def plan(
        record: IncidentRecord, rows: list[store.SubscriptionRow], notified: Mapping[str, Told]
    ) -> list[store.PlannedDelivery]:
        return [
            store.PlannedDelivery(
                subscription_id=p.subscription_id,
                channel=p.channel,
                endpoint=p.endpoint,
                webhook_id=p.webhook_id,
                event=p.event,
            )
            for p in route(record, cache.domain(rows), clock(), notified=notified)
        ]

    return plan


def _downgrades(
    record: IncidentRecord, planned: list[store.PlannedDelivery]
) -> list[store.PlannedDelivery]:
    """The planned messages that tell a subscriber its gunfire alert was downgraded: as
    ``downgraded``, or as ``cancelled`` because the new class is not one it takes."""
    if record.event == "cancelled" or record.classification in GUNFIRE_CLASSES:
        return []
    return [p for p in planned if p.event == "downgraded" or p.event == "cancelled"]


class IncidentConsumer:
    """Consumes ``settings.incidents_topic`` in group ``settings.group_id``.

    ``run()`` blocks until cancelled (or raises on a fatal error); ``start``/``stop`` manage
    the Kafka clients.
    """

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        plan: store.Planner,
        places: PlaceIndex | None = None,
        gate: store.Gate | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.plan = plan
        self.places = places
        self.gate = gate
        self.same_shot: store.SameShot = functools.partial(
            same_shot,
            window_s=settings.same_shot_window_s,
            distance_m=settings.same_shot_distance_m,
        )
        self.consumer: AIOKafkaConsumer = build_consumer(
            bootstrap_servers,
            group_id=settings.group_id,
            client_id=f"shotline-dispatch-{settings.instance_id}",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            max_poll_records=settings.max_poll_records,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            connection=settings.kafka_connection(),
        )
        self.producer: AIOKafkaProducer = build_producer(
            bootstrap_servers,
            client_id="shotline-dispatch-dlq",
            connection=settings.kafka_connection(),
        )
        self.commits = CommitPolicy()
        self.budget = DeadLetterBudget(settings.dlq_limit, settings.dlq_window_s)

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(
            [self.settings.incidents_topic],
            listener=CommitBeforeRevoke(self._before_revoke),
        )

    async def _before_revoke(self, partitions: set[TopicPartition]) -> None:
        # Work is finished message by message, so all that is left is to commit it.
        await self.commits.commit(self.consumer, only=partitions)
        self.commits.forget(partitions)

    async def stop(self) -> None:
        """Commit what is finished and leave the group. Never raises on a dead broker."""
        try:
            await self.commits.commit(self.consumer)
        except Exception:
            log.warning("final offset commit failed; those messages will be re-read", exc_info=True)
        await self.consumer.stop()
        await self.producer.stop()

    async def run(self) -> None:
        """Fetch → store → commit, until cancelled."""
        while True:
            batches = await self.consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    await self.handle(message)
                    self.commits.advance(tp, message.offset + 1)
                high = self.consumer.highwater(tp)
                if high is not None and messages:  # records on the topic not yet read
                    lag = max(0, high - (messages[-1].offset + 1))
                    metrics.CONSUMER_LAG.labels(str(tp.partition)).set(lag)
            await self.commits.commit(self.consumer)

    async def handle(self, message: ConsumerRecord) -> str:
        """Process one message; returns its outcome (stored, duplicate, stale, poison)."""
        try:
            record = decode(message.value)
        except PoisonMessage as exc:
            self.budget.spend(time.monotonic())
            await send_dead_letter(
                self.producer,
                message.topic,
                key=message.key,
                value=message.value,
                reason=str(exc),
                source_partition=message.partition,
                source_offset=message.offset,
            )
            metrics.INCIDENTS_CONSUMED.labels("poison").inc()
            log.warning("poison incident sent to the dead-letter topic", extra={"reason": str(exc)})
            return "poison"
        # The place words are computed here, once per version, and stored with it (see
        # services.dispatch.places); a redelivered version keeps its first words.
        place = None if self.places is None else self.places.describe(record)
        result = await self._store_with_retry(record, message.partition, message.offset, place)
        metrics.INCIDENTS_CONSUMED.labels(result.outcome).inc()
        for planned in result.deliveries:
            metrics.DELIVERIES_CREATED.labels(planned.channel).inc()
        downgraded = _downgrades(record, result.deliveries)
        if downgraded:
            for planned in downgraded:
                metrics.DOWNGRADES.labels(planned.event).inc()
            log.warning(
                "an incident alerted as gunfire was downgraded",
                extra={
                    "event_type": "incident.downgraded",
                    "incident_id": record.incident_id,
                    "version": record.version,
                    "classification": record.classification,
                    "told": {p.subscription_id: p.event for p in downgraded},
                },
            )
        if result.same_shot_as:
            metrics.SAME_SHOT.inc()
        if result.outcome == "stored":
            log.info(
                "incident stored",
                extra={
                    "incident_id": record.incident_id,
                    "version": record.version,
                    "deliveries": len(result.deliveries),
                    "same_shot_as": list(result.same_shot_as),
                },
            )
        return result.outcome

    async def _store_with_retry(
        self,
        record: IncidentRecord,
        partition: int,
        offset: int,
        place: dict[str, Any] | None = None,
    ) -> store.StoreResult:
        deadline = time.monotonic() + self.settings.db_retry_deadline_s
        delay = 0.1
        while True:
            try:
                result = await store.store_incident(
                    self.pool,
                    record,
                    self.plan,
                    partition=partition,
                    offset=offset,
                    same_shot=self.same_shot,
                    place=place,
                    gate=self.gate,
                )
                if result.outcome == "stored" or record.review is not None:
                    return result
                # a review decision may have taken this version number: store it after
                carried = await holds.absorb_machine_version(self.pool, record, partition, offset)
                if carried is None:
                    return result
                record = carried
                continue
            except _TRANSIENT as exc:
                if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
                    raise  # a bug, not an outage: crash loudly, the offset stays uncommitted
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "database error while storing an incident; retrying",
                    extra={"incident_id": record.incident_id, "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
