"""aiokafka plumbing shared by every service: producers, consumers, topics, commits, dead letters.

Delivery semantics are at-least-once everywhere (the embedded broker supports neither
idempotent nor transactional producers, and consumers must be idempotent on Apache Kafka
anyway):

* producers wait for ``acks=all`` and callers await the acknowledgement before they report
  success (ingest's 202) or commit the input (the locator);
* consumers never auto-commit; they commit ``offset + 1`` of finished work only, through
  :class:`CommitPolicy`, and also before giving partitions up on a rebalance
  (:class:`CommitBeforeRevoke`);
* a message that cannot be processed (poison) goes to ``<topic>.dlq`` with its reason, under a
  :class:`DeadLetterBudget` so that a bad deploy cannot drain a whole topic there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import BaseModel

from shared.settings import KafkaConnection

log = logging.getLogger(__name__)

__all__ = [
    "BrokerUnavailable",
    "CommitBeforeRevoke",
    "CommitPolicy",
    "DeadLetterBudget",
    "DeadLetterBudgetExceeded",
    "KafkaError",
    "TopicPartition",
    "broker_answers",
    "build_consumer",
    "build_producer",
    "dead_letter_topic",
    "encode",
    "ensure_topics",
    "send_dead_letter",
    "wait_for_broker",
]


class BrokerUnavailable(RuntimeError):
    """The broker did not answer within the allowed time."""


def encode(model: BaseModel) -> bytes:
    """A wire model as compact JSON bytes (times keep their microseconds)."""
    return orjson.dumps(model.model_dump(mode="json"))


def _first_host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until the first bootstrap server accepts TCP connections.

    Raises :class:`BrokerUnavailable` after ``timeout_s``.
    """
    host, port = _first_host_port(bootstrap)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            writer.close()
            await writer.wait_closed()
            return
        except (OSError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"Kafka at {bootstrap} did not answer within {timeout_s:g} s ({exc}); "
                    "is it running? (KAFKA_BOOTSTRAP_SERVERS)"
                ) from exc
            await asyncio.sleep(0.05)


async def broker_answers(
    bootstrap: str, timeout_s: float = 1.0, *, connection: KafkaConnection | None = None
) -> None:
    """Readiness: the first bootstrap server answers a Metadata request within ``timeout_s``.

    A TCP connect is not enough: a frozen or overloaded broker still accepts connections
    (the kernel completes the handshake) but answers nothing, and a producer sending to it
    waits. Raises :class:`BrokerUnavailable` naming why.
    """
    host, port = _first_host_port(bootstrap)
    conn = None
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host,
                port,
                client_id="shotline-readyz",
                request_timeout_ms=int(timeout_s * 1000),
                **(connection or KafkaConnection()).client_options(),
            )
            await conn.send(MetadataRequest([]))  # no topics: the cheapest answer there is
    except TimeoutError as exc:
        raise BrokerUnavailable(
            f"Kafka at {bootstrap} did not answer a metadata request in {timeout_s:g} s"
        ) from exc
    except (OSError, KafkaError) as exc:
        raise BrokerUnavailable(f"Kafka at {bootstrap} unreachable: {exc!r}") from exc
    finally:
        if conn is not None:
            conn.close()


def broker_reachable(bootstrap: str, timeout_s: float = 0.5) -> bool:
    """A cheap synchronous TCP check (readiness probes)."""
    host, port = _first_host_port(bootstrap)
    try:
        with socket.create_connection((host, port), timeout_s):
            return True
    except OSError:
        return False


async def ensure_topics(
    bootstrap: str, topics: Mapping[str, int], *, connection: KafkaConnection | None = None
) -> None:
    """Create each topic with its partition count (and ``connection.replication_factor``
    replicas) if it does not exist yet. Idempotent.

    An existing topic is left as it is (partitions are never changed behind an operator's
    back: that would move zones between partitions).
    """
    connection = connection or KafkaConnection()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="shotline-admin", **connection.client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name, num_partitions=partitions, replication_factor=connection.replication_factor
            )
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            # Another instance may create it between our list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            log.info("topics created", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


def build_producer(
    bootstrap: str,
    *,
    client_id: str,
    linger_ms: int = 2,
    connection: KafkaConnection | None = None,
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (``acks=all``). Not started."""
    return AIOKafkaProducer(
        **(connection or KafkaConnection()).client_options(),
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )


def build_consumer(
    bootstrap: str,
    *,
    group_id: str,
    client_id: str,
    session_timeout_ms: int,
    max_poll_records: int = 500,
    fetch_max_wait_ms: int = 100,
    connection: KafkaConnection | None = None,
) -> AIOKafkaConsumer:
    """A group consumer with manual commits from the earliest uncommitted offset. Not started.

    ``fetch_max_wait_ms`` bounds how long a fetch waits at the broker when nothing is new;
    a broker that does not answer a waiting fetch as soon as records arrive (the embedded
    one) delays every record by up to that much.
    """
    return AIOKafkaConsumer(
        **(connection or KafkaConnection()).client_options(),
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(session_timeout_ms // 4, 300),
        rebalance_timeout_ms=max(session_timeout_ms, 5_000),
        max_poll_records=max_poll_records,
        fetch_max_wait_ms=fetch_max_wait_ms,
        isolation_level="read_uncommitted",
    )


@dataclass
class CommitPolicy:
    """The one commit policy: per partition, commit the next offset after finished work.

    ``advance(tp, next_offset)`` records that every message below ``next_offset`` is
    finished (its effects are durable elsewhere). ``commit`` sends only what moved since the
    last commit, and never moves an offset backwards.
    """

    _pending: dict[TopicPartition, int] = field(default_factory=dict)
    _committed: dict[TopicPartition, int] = field(default_factory=dict)

    def advance(self, tp: TopicPartition, next_offset: int) -> None:
        best = max(self._pending.get(tp, -1), self._committed.get(tp, -1))
        if next_offset > best:
            self._pending[tp] = next_offset

    def pending(self) -> dict[TopicPartition, int]:
        return dict(self._pending)

    async def commit(
        self, consumer: AIOKafkaConsumer, only: Iterable[TopicPartition] | None = None
    ) -> None:
        """Commit pending offsets (of ``only`` those partitions, if given). Raises KafkaError."""
        wanted = set(only) if only is not None else None
        offsets = {tp: off for tp, off in self._pending.items() if wanted is None or tp in wanted}
        if not offsets:
            return
        await consumer.commit(offsets)
        for tp, off in offsets.items():
            self._committed[tp] = off
            if self._pending.get(tp) == off:
                del self._pending[tp]

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop(tp, None)
            self._committed.pop(tp, None)


class CommitBeforeRevoke(ConsumerRebalanceListener):
    """Runs the service's hand-back step before partitions are taken away, then forgets them.

    ``before_revoke(partitions)`` must finish or drop in-flight work for those partitions
    and commit what is finished; whatever it does not commit is re-delivered to the next
    owner (at-least-once).
    """

    def __init__(
        self,
        before_revoke: Callable[[set[TopicPartition]], Awaitable[None]],
        on_assign: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
    ) -> None:
        self._before_revoke = before_revoke
        self._on_assign = on_assign

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            await self._before_revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._on_assign is not None:
            await self._on_assign(set(assigned))


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


class DeadLetterBudgetExceeded(RuntimeError):
    """Too many dead letters in a window: stop consuming rather than drain a topic."""


@dataclass
class DeadLetterBudget:
    """At most ``limit`` dead letters per ``window_s`` seconds (pure; takes ``now``).

    ``spend(now)`` raises :class:`DeadLetterBudgetExceeded` when one more would break the
    budget: a bad deploy that rejects every message then crashes loudly (and is restarted
    on the previous version) instead of moving the whole topic to the dead-letter topic.
    """

    limit: int = 100
    window_s: float = 60.0
    _times: list[float] = field(default_factory=list)

    def spend(self, now: float) -> None:
        self._times = [t for t in self._times if now - t < self.window_s]
        if len(self._times) >= self.limit:
            raise DeadLetterBudgetExceeded(
                f"more than {self.limit} dead letters within {self.window_s:.0f} s"
            )
        self._times.append(now)


async def send_dead_letter(
    producer: AIOKafkaProducer,
    source_topic: str,
    *,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    source_partition: int,
    source_offset: int,
) -> None:
    """Write a poison message to ``<topic>.dlq`` with its reason; waits for the ack."""
    headers = [
        ("shotline-dlq-reason", reason.encode()[:4000]),
        ("shotline-dlq-source", f"{source_topic}/{source_partition}/{source_offset}".encode()),
    ]
    await producer.send_and_wait(
        dead_letter_topic(source_topic), value=value, key=key, headers=headers
    )
