"""The locator's Kafka consumer: detections in, incident versions out, offsets committed last.

One loop, a short chain of steps per fetch::

    fetch (at most every fetch_interval_ms; meanwhile sleep until a window deadline)
      -> decode            poison -> "<topic>.dlq" with its reason (DeadLetterBudget)
      -> engine.add        one pure ZoneEngine per (partition, zone)
      -> engine.poll       windows whose deadline passed
      -> produce           incidents keyed by incident_id, acks=all; the ack is taken by a
                           callback, so the loop goes on serving windows meanwhile
      -> commit            per partition: min over its zones' retained offsets and the floors
                           of its unacknowledged incidents, else last + 1 (in the background,
                           one commit at a time)

Delivery is at-least-once and replays are exact: an offset is committed only once every
incident depending on the detections below it is acknowledged (an unacknowledged incident's
*floor* holds its partition's commits back), and the engines keep (through
``min_retained_offset``) every detection that open state still depends on. A crashed or
rebalanced-away instance's successor re-reads from the committed offset, rebuilds the same
state and re-publishes the same (incident_id, version)s, which consumers drop as duplicates.
A failed send is re-sent with backoff until ``produce_timeout_s``, then the loop dies.

Replays see the same windows as the live run because, while a partition is behind (lag > 0),
windows are closed against the partition's *event clock* — the latest ``received_at`` consumed
from it, plus a settle no window's pulses need — rather than the wall clock: a window whose
deadline has passed in wall time may still have pulses further down the backlog (see
:func:`poll_clock`).

Back-pressure: when the engines hold more than ``max_retained`` undecided detections the
assigned partitions are paused (nothing more is fetched) until they drain to
``resume_retained``; when more than ``max_unacked`` incidents await their acks, the loop waits
for them. Buffers are the consumer's bounded fetch and those unacknowledged incidents.

Pure decisions (:func:`commit_offset`, :func:`poll_clock`, :func:`should_pause`,
:func:`decode_detection`, :func:`health_changes`) are module functions with table tests in
``tests/unit/locator/test_service_*.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from services.locator import metrics
from services.locator.config import LocatorConfig
from services.locator.engine import ZoneEngine
from services.locator.evidence import Score, ShotEvidence
from services.locator.health import SensorHealth, is_drifting
from services.locator.scoring import ScoringModel
from services.locator.settings import LocatorSettings
from services.locator.warmup import warm_up_kernels
from shared.clock import Clock, utc_now
from shared.kafka import (
    BrokerUnavailable,
    CommitBeforeRevoke,
    CommitPolicy,
    DeadLetterBudget,
    KafkaError,
    broker_answers,
    build_consumer,
    build_producer,
    dead_letter_topic,
    encode,
    ensure_topics,
    send_dead_letter,
    wait_for_broker,
)
from shared.metrics import MetricsServer
from shared.schemas import DETECTION_SCHEMA_VERSION, DetectionRecord, IncidentRecord

log = logging.getLogger("shotline.locator")

Scorer = Callable[[ShotEvidence], Score]
EngineFactory = Callable[[str, LocatorConfig, Scorer], ZoneEngine]


# ====================================================================== pure decisions
def commit_offset(next_offset: int, retained: Iterable[int | None]) -> int:
    """The offset to commit for one partition.

    ``next_offset`` is the last consumed offset + 1; ``retained`` holds, for each zone engine
    on the partition, the smallest offset it still needs to rebuild its open state (None =
    nothing). Everything below the result is finished: its incidents are acknowledged and no
    open state depends on it. Never above ``next_offset``.
    """
    needed = [offset for offset in retained if offset is not None]
    return min([next_offset, *needed])


class LowestRetained:
    """The smallest retained offset among one partition's zones, kept up to date as they change.

    ``update(zone, offset)`` records a zone's current retained offset (None: it holds
    nothing); ``lowest()`` is the smallest over every zone (None if none holds anything).
    Why not a scan at each commit: a city holds thousands of mostly idle zones, and scanning
    them all every ``commit_interval_s`` stalled the loop for milliseconds at a time (a
    lazily invalidated heap: O(log zones) per change, amortised; never more than about twice
    as many entries as zones).
    """

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (offset, zone); stale once the zone moved on

    def update(self, zone: str, offset: int | None) -> None:
        if offset is None:
            self._current.pop(zone, None)
            return
        if self._current.get(zone) == offset:
            return
        self._current[zone] = offset
        heapq.heappush(self._heap, (offset, zone))
        if len(self._heap) > 2 * len(self._current) + 64:
            self._heap = sorted((o, z) for z, o in self._current.items())  # (a sorted heap)

    def lowest(self) -> int | None:
        heap = self._heap
        while heap:
            offset, zone = heap[0]
            if self._current.get(zone) == offset:
                return offset
            heapq.heappop(heap)  # superseded
        return None


def poll_clock(
    now: datetime,
    event_clock: datetime | None,
    *,
    caught_up: bool,
    paused: bool,
    caught_up_at: datetime | None = None,
    settle: timedelta = timedelta(0),
) -> datetime:
    """The instant a partition's windows are closed against.

    * Caught up (nothing left to fetch) or paused for back-pressure: the wall clock ``now``.
      (Paused partitions must drain by wall time, else back-pressure would never end.)
    * Behind (a backlog after a restart or rebalance): the partition's event clock, the latest
      ``received_at`` consumed from it, plus ``settle``, capped at ``now``. A window then
      closes only once the backlog has moved (nearly) past its deadline, as in the live run,
      so a replay rebuilds the same windows and hence the same incident ids and versions.
      ``settle`` may be at most the part of a deadline no pulse of the window can need
      (``window_margin_s - association_tolerance_s``): every pulse of a window was received
      that long before its deadline, so it is read by then. The service gives half of it,
      keeping the rest for records slightly out of ``received_at`` order.
    * Behind, but caught up at ``caught_up_at`` (the last instant nothing was left to fetch):
      at least that instant. Everything appended before it was read, so what could be closed
      then can be closed now.

    Why the last two: a live partition is "behind" whenever records arrived since the last
    fetch, and its event clock then trails the wall clock by Kafka's delivery delay (0.1 s,
    up to 0.5 s on a busy embedded broker), which every window used to wait for on top of its
    deadline.
    """
    if caught_up or paused or event_clock is None:
        return now
    at = event_clock + settle
    if caught_up_at is not None and caught_up_at > at:
        at = caught_up_at
    return min(now, at)


def should_pause(retained: int, paused: bool, *, high: int, low: int) -> bool:
    """Whether fetching should be paused, with hysteresis (pause above ``high``, resume at
    ``low`` or below) so that a level near one threshold does not flap."""
    if paused:
        return retained > low
    return retained > high


def decode_detection(value: bytes | None) -> DetectionRecord | str:
    """The record, or the reason it is poison (a dead letter, never a guess).

    Unknown ``schema_version``s are poison rather than best-effort parsed: a newer producer's
    meaning is not ours to guess.
    """
    if value is None:
        return "empty record (tombstone)"
    try:  # the common case in one pass; the slower steps below only explain a failure
        record = DetectionRecord.model_validate_json(value)
        if "schema_version" in record.model_fields_set:  # a missing version is never assumed
            return record
    except ValidationError:
        pass
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(raw, dict):
        return f"invalid record: expected a JSON object, got {type(raw).__name__}"
    version = raw.get("schema_version")
    if version != DETECTION_SCHEMA_VERSION:
        return f"unknown schema_version {version!r} (this locator reads {DETECTION_SCHEMA_VERSION})"
    try:
        return DetectionRecord.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid detection record: {problems}"


def health_changes(
    flagged: set[str], health: Mapping[str, SensorHealth], config: LocatorConfig
) -> tuple[set[str], set[str]]:
    """(newly flagged, recovered) sensor ids, given those ``flagged`` so far."""
    now_flagged = {sid for sid, h in health.items() if is_drifting(h, config)}
    return now_flagged - flagged, (flagged & set(health)) - now_flagged


# ====================================================================== the service
#: Records added (over all partitions) between two polls within one fetch.
_CHUNK = 32
#: Event-loop turns given to I/O at each pause (see :func:`_let_io_run`).
_IO_TURNS = 5
#: Engine work (closing windows) between two I/O pauses, at most about this many seconds (a
#: single zone's poll is never split). Why: a poll closing a fireworks show or a backlog's
#: windows can take tens of milliseconds, and acks that arrived meanwhile, fetches and due
#: windows elsewhere would wait for all of it.
_POLL_BUDGET_S = 0.002


@dataclass(eq=False)
class _Sent:
    """An incident handed to the producer and not yet acknowledged.

    ``floor`` is the lowest offset of ``tp`` that replaying must start from to publish this
    version again: the zone's retained offset just before the window closed, which covers
    the window's pulses and the incident's earlier rounds. Offsets are never committed past
    the floor of an unacknowledged incident, so a crash re-publishes it.
    """

    record: IncidentRecord
    due: datetime
    tp: TopicPartition
    floor: int
    future: asyncio.Future[object]
    sent_mono: float = field(default_factory=time.monotonic)


@dataclass
class _Zone:
    """One zone's engine and what the service caches about it between steps.

    The caches (deadline, retained offset) are refreshed only for engines touched (added to
    or polled) in a step, so a step costs in proportion to the active zones, not all zones.
    """

    engine: ZoneEngine
    deadline: datetime | None = None
    retained: int | None = None
    stale: bool = False  # added to / polled since the caches were refreshed
    polled: bool = False  # polled since: its retained offset may have moved up
    queued: float | None = None  # the deadline (POSIX s) of its live entry in the service's heap
    #: engine.duplicates, .late, .same_onset, .rounds_merged already counted
    ignored_seen: tuple[int, int, int, int] = (0, 0, 0, 0)
    health_changed: bool = False  # located a round since the last health check

    pending: int = 0  # undecided detections the engine held at the last refresh

    def refresh(self) -> int:
        """Update the caches if stale; returns the change in ``pending``."""
        if not self.stale:
            return 0
        self.deadline = self.engine.next_deadline()
        # Adding never moves a held retained offset: partition offsets only grow, so a new
        # detection's is above every one held (ZoneEngine.min_retained_offset). Asking again
        # after every add cost ~1.5 % of the live loop.
        if self.polled or self.retained is None:
            self.retained = self.engine.min_retained_offset()
        self.stale = self.polled = False
        before, self.pending = self.pending, _pending_count(self.engine)
        return self.pending - before


@dataclass
class _Partition:
    """What the service knows about one assigned partition."""

    next_offset: int | None = None  # last consumed + 1
    event_clock: datetime | None = None  # latest received_at consumed
    caught_up_at: datetime | None = None  # last wall-clock instant nothing was left to fetch
    zones: dict[str, _Zone] = field(default_factory=dict)  # by name
    floors: LowestRetained = field(default_factory=LowestRetained)  # its zones' ``retained``


class LocatorService:
    """The locator consumer, embeddable: ``await start()`` … ``await stop(timeout_s)``.

    ``scorer`` defaults to the scoring model at ``settings.scoring_model_path`` (built-in
    model when unset). ``clock`` is the wall clock given to the engines.
    """

    def __init__(
        self,
        settings: LocatorSettings,
        *,
        bootstrap_servers: str,
        scorer: Scorer | None = None,
        clock: Clock = utc_now,
        engine_factory: EngineFactory = ZoneEngine,
    ) -> None:
        self.settings = settings
        self.config = settings.locator_config()
        #: See poll_clock: half the part of a deadline no pulse of its window needs.
        self._settle = timedelta(
            seconds=max(0.0, self.config.window_margin_s - self.config.association_tolerance_s) / 2
        )
        self._bootstrap = bootstrap_servers
        self._scorer = scorer
        self._clock = clock
        self._engine_factory = engine_factory
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._metrics_server: MetricsServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()  # the loop's steps vs. the rebalance callback
        self._engines: dict[tuple[TopicPartition, str], _Zone] = {}
        self._touched: set[tuple[TopicPartition, str]] = set()
        # Zones whose caches must be refreshed, and every zone's next window deadline in a
        # heap per partition (lazily invalidated), so finding the due windows costs
        # O(due · log zones), not a scan of every zone per step: a city holds thousands of
        # mostly idle zones. Per partition, because each closes windows against its own clock.
        self._stale: set[tuple[TopicPartition, str]] = set()
        self._deadlines: dict[TopicPartition, list[tuple[float, int, str, _Zone]]] = {}
        self._deadline_seq = itertools.count()
        self._pending_total = 0  # sum of the zones' cached ``pending``
        self._health_pending: set[tuple[TopicPartition, str]] = set()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._commits = CommitPolicy()
        self._budget = DeadLetterBudget(settings.dlq_limit, settings.dlq_window_s)
        self._paused = False
        self._flagged: dict[str, set[str]] = {}
        self._flagged_count = 0  # sum of len(self._flagged[zone]): not re-summed every step
        self._health_due: dict[str, float] = {}
        # When each held detection was consumed (monotonic), for the processing latency.
        # Bounded: the oldest entries go first (a lost entry only drops one latency sample).
        self._consumed_at: OrderedDict[str, float] = OrderedDict()
        self._consumed_cap = 2 * settings.max_retained + settings.max_poll_records
        self._next_wake: float | None = None
        #: The last poll stopped at its time budget with due windows left (see _poll).
        self._poll_unfinished = False
        self._fetched_at = 0.0  # monotonic instant of the last fetch that returned records
        self._commit_due = 0.0
        self._commit_task: asyncio.Task[None] | None = None
        self._unacked: set[_Sent] = set()
        self._failed: list[tuple[_Sent, BaseException]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    @property
    def paused(self) -> bool:
        """True while fetching is paused for back-pressure."""
        return self._paused

    @property
    def retained(self) -> int:
        """Detections held undecided by this instance's engines."""
        return self._retained()

    @property
    def zones(self) -> set[str]:
        """Zones this instance currently has an engine for."""
        return {zone for _, zone in self._engines}

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    async def start(self) -> None:
        """Connect, join the group and start consuming in a background task.

        Raises BrokerUnavailable / KafkaError if Kafka cannot be reached, and whatever
        loading the scoring model raises.
        """
        if self._scorer is None:
            self._scorer = ScoringModel.load(self.settings.scoring_model_path)
        # Before consuming: a first compile would otherwise stall the first shot's alert.
        warm_s = await asyncio.to_thread(warm_up_kernels, self.config)
        if warm_s > 1.0:
            log.info(
                "compiled the locator's kernels (cached on disk for the next start)",
                extra={"seconds": round(warm_s, 1)},
            )
        s = self.settings
        await wait_for_broker(self._bootstrap, timeout_s=s.kafka_connect_timeout_s)
        connection = s.kafka_connection()
        await ensure_topics(
            self._bootstrap,
            {
                s.detections_topic: s.topic_partitions,
                s.incidents_topic: s.topic_partitions,
                dead_letter_topic(s.detections_topic): 1,
            },
            connection=connection,
        )
        self._producer = build_producer(
            self._bootstrap, client_id="shotline-locator", linger_ms=0, connection=connection
        )
        await self._producer.start()
        self._consumer = build_consumer(
            self._bootstrap,
            group_id=s.group_id,
            client_id="shotline-locator",
            session_timeout_ms=s.kafka_session_timeout_ms,
            max_poll_records=s.max_poll_records,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            connection=connection,
        )
        self._consumer.subscribe(
            [s.detections_topic],
            listener=CommitBeforeRevoke(self._before_revoke, self._on_assign),
        )
        try:
            await self._consumer.start()
            if s.metrics_port >= 0:
                self._metrics_server = MetricsServer(
                    s.metrics_host, s.metrics_port, metrics.REGISTRY, ready=self._readiness
                )
                self._metrics_server.start()
        except BaseException:
            await self._close_clients()
            raise
        self._task = asyncio.create_task(self._run(), name="locator-consumer")

    def _readiness(self) -> dict[str, str]:
        """``/readyz`` of the metrics listener (its own thread): Kafka answers a metadata
        request within a second (a frozen broker still accepts TCP connections)."""
        try:
            asyncio.run(
                broker_answers(
                    self._bootstrap,
                    timeout_s=1.0,
                    connection=self.settings.kafka_connection(),
                )
            )
        except BrokerUnavailable:
            return {"kafka": "unreachable"}
        return {"kafka": "ok"}

    async def wait(self) -> None:
        """Block until the consumer loop ends; re-raises the error that ended it."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish windows whose deadline has passed, publish and commit them, leave the group.

        Open windows are handed back uncommitted (the next owner re-reads them). Bounded by
        ``timeout_s``: past it, the loop is cancelled and nothing more is committed.
        """
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                log.warning("locator did not drain in time; handing back uncommitted work")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("locator loop had failed")
        await self._close_clients()

    async def abort(self) -> None:
        """Stop at once like a crash: nothing more is published or committed.

        Everything uncommitted is re-delivered to the next owner. For fatal errors and tests.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._cancel_commit()
        self._unacked.clear()
        self._failed.clear()
        self._engines.clear()
        self._pending_total = 0
        self._deadlines.clear()
        self._stale.clear()
        self._partitions.clear()
        await self._close_clients(leave_group=False)

    async def _cancel_commit(self) -> None:
        task, self._commit_task = self._commit_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _close_clients(self, leave_group: bool = True) -> None:
        await self._cancel_commit()  # the final step awaited it; only a failed loop leaves one
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            if not leave_group:
                # A crash commits nothing: make sure the revoke hook has nothing to commit.
                self._commits = CommitPolicy()
            await consumer.stop()
        if producer is not None:
            await producer.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        assert self._consumer is not None
        try:
            while not self._stopping.is_set():
                batch = await self._fetch()
                async with self._lock:
                    await self._step(batch)
            async with self._lock:
                await self._step({}, final=True)  # windows due at SIGTERM: publish, commit
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("locator consumer loop failed")
            raise

    async def _fetch(self) -> Mapping[TopicPartition, list[ConsumerRecord]]:
        """The next records, or none when a window falls due first.

        At most one fetch per ``fetch_interval_ms`` after one that returned fewer than
        ``max_poll_records`` (the live tail); until then only due windows are served.
        Why: at the tail of a live topic every fetch returns a few records, so fetching as
        fast as records arrive costs the broker a request (and this loop a step) per few
        records. A detection waits at most the interval in the client's buffer; windows are
        still closed at their deadlines, which lie far later than the interval (by at least
        ``ingest_lateness_s``).
        """
        assert self._consumer is not None
        hold_s = self._fetched_at + self.settings.fetch_interval_ms / 1000 - time.monotonic()
        if hold_s > 0:
            until_wake = self._until_wake_s()
            if until_wake is not None and until_wake < hold_s:
                # (At least 1 ms: a replaying partition's due-but-not-yet windows keep the
                # wake-up in the past, and this must not spin.)
                await asyncio.sleep(max(until_wake, 0.001))
                return {}
            await asyncio.sleep(hold_s)
        wait_ms = self.settings.fetch_wait_ms
        until_wake = self._until_wake_s()
        if until_wake is not None:
            wait_ms = int(min(wait_ms, until_wake * 1000 + 1))
        batch = await self._consumer.getmany(
            timeout_ms=wait_ms, max_records=self.settings.max_poll_records
        )
        if batch:
            # A full batch means a backlog (a restart, a rebalance, an outage upstream): fetch
            # the rest at once. The hold is for the live tail; at 500 records a fetch it would
            # cap catching up at 12,500 records/s.
            full = sum(map(len, batch.values())) >= self.settings.max_poll_records
            self._fetched_at = 0.0 if full else time.monotonic()
        return batch

    def _until_wake_s(self) -> float | None:
        """Seconds until the earliest window deadline (0 if passed; None if no window)."""
        if self._next_wake is None:
            return None
        return max(0.0, self._next_wake - self._clock().timestamp())

    async def _step(
        self, batch: Mapping[TopicPartition, list[ConsumerRecord]], *, final: bool = False
    ) -> None:
        """One fetch: add in chunks, closing due windows and sending their incidents as soon
        as they are decided; commit what is finished.

        Neither acks nor commits are awaited here (but at the end, or when too many acks are
        outstanding): a loop waiting on the broker leaves due windows waiting too. Acks are
        taken by a callback; offsets stay below every unacknowledged incident's floor.
        """
        await self._retry_failed_sends()
        now = self._clock()
        consumed_mono = time.monotonic()
        added = 0
        for tp, records in batch.items():
            if tp not in self._partitions:  # revoked while this batch was in flight
                continue
            for i in range(0, len(records), _CHUNK):
                chunk = records[i : i + _CHUNK]
                await self._consume(tp, chunk, now, consumed_mono)
                added += len(chunk)
                # A backlog closes windows as it goes, not only after the whole fetch, and
                # windows falling due anywhere meanwhile are not kept waiting for the rest.
                # Counted over partitions: a live fetch brings a few records per partition,
                # and a poll after each partition's few repeated the poll's own work (the
                # refreshes, a look at every partition's heap, an I/O pause) up to six times
                # a fetch. (A partition's windows depend only on its own records and clock.)
                if added >= _CHUNK:
                    added = 0
                    await self._poll_and_send()  # (ends with an I/O pause)
        await self._poll_and_send()
        if final or len(self._unacked) > self.settings.max_unacked:
            await self._await_acks()  # back-pressure: refuse more work until acked
        # Committing is a broker round trip: at most every commit_interval_s (a crash then
        # re-reads a little more), in the background but one at a time; awaited at the end.
        if self._commit_task is not None and self._commit_task.done():
            await self._finish_commit()  # re-raises what it raised beyond a KafkaError
        if final:
            await self._finish_commit()
            await self._commit()
        elif time.monotonic() >= self._commit_due and self._commit_task is None:
            self._commit_due = time.monotonic() + self.settings.commit_interval_s
            self._commit_offsets()
            self._commit_task = asyncio.create_task(self._commit_in_background())
        self._back_pressure()
        self._observe(time.monotonic())

    async def _consume(
        self,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        now: datetime,
        consumed_mono: float,
    ) -> None:
        part = self._partitions[tp]
        for record in records:
            decoded = decode_detection(record.value)
            if isinstance(decoded, str):
                await self._dead_letter(tp, record, decoded)
            else:
                delay_s = (now - decoded.received_at).total_seconds()
                metrics.DELIVERY_DELAY.observe(delay_s if delay_s > 0.0 else 0.0)
                self._add(tp, part, decoded, record.offset, now, consumed_mono)
            part.next_offset = record.offset + 1
        metrics.DETECTIONS_CONSUMED.inc(len(records))

    def _add(
        self,
        tp: TopicPartition,
        part: _Partition,
        det: DetectionRecord,
        offset: int,
        now: datetime,
        consumed_mono: float,
    ) -> None:
        # A drill's pulses get an engine of their own beside the zone's: never associated
        # with a real pulse, so a real incident never takes a drill's pulse (nor the reverse),
        # and every incident of that engine is an exercise. ('#' is in no zone identifier.)
        engine_zone = f"{det.zone}#exercise" if det.exercise else det.zone
        key = (tp, engine_zone)
        zone = self._engines.get(key)
        if zone is None:
            assert self._scorer is not None
            zone = _Zone(self._engine_factory(det.zone, self.config, self._scorer))
            zone.engine.exercise = det.exercise
            self._engines[key] = zone
            part.zones[engine_zone] = zone
        if part.event_clock is None or det.received_at > part.event_clock:
            part.event_clock = det.received_at
        zone.engine.add(det, offset, min(now, part.event_clock))
        zone.stale = True
        self._stale.add(key)
        self._touched.add(key)
        self._consumed_at[f"{det.sensor_id}/{det.detection_id}"] = consumed_mono
        if len(self._consumed_at) > self._consumed_cap:
            self._consumed_at.popitem(last=False)

    async def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord, reason: str) -> None:
        assert self._producer is not None
        # Raises DeadLetterBudgetExceeded: a flood of poison means a bad deploy upstream;
        # crash loudly (and commit nothing) rather than drain the topic into the DLQ.
        self._budget.spend(time.monotonic())
        await send_dead_letter(
            self._producer,
            tp.topic,
            key=record.key,
            value=record.value,
            reason=reason,
            source_partition=tp.partition,
            source_offset=record.offset,
        )
        metrics.DEAD_LETTERS.inc()
        log.warning(
            "poison detection sent to the dead-letter topic",
            extra={"partition": tp.partition, "offset": record.offset, "reason": reason[:500]},
        )

    def _caught_up(self, tp: TopicPartition, part: _Partition) -> bool:
        assert self._consumer is not None
        try:
            high = self._consumer.highwater(tp)
        except AssertionError:  # no longer assigned
            return True
        return high is None or part.next_offset is None or part.next_offset >= high

    async def _poll_and_send(self) -> None:
        """Close every due window and send its incidents, pausing for I/O after each
        ``_POLL_BUDGET_S`` of engine work (the pause also puts the sends on the wire);
        returns after the pause that follows the last due window.

        Adds no detection meanwhile, so every zone's windows are decided on exactly the
        pulses they would have been without the pauses (a later poll clock only finds more
        windows due, as a later poll would).
        """
        while True:
            await self._send(self._poll(self._clock()))
            await _let_io_run()
            if not self._poll_unfinished:
                return

    def _poll(self, now: datetime) -> list[tuple[IncidentRecord, datetime, TopicPartition, int]]:
        """Close due windows, zone by zone, for about ``_POLL_BUDGET_S`` at most (at least one
        zone); returns (incident, due, partition, floor). Sets ``_poll_unfinished`` when it
        stopped with due windows left: call again before adding detections.

        A zone's windows are closed against its partition's :func:`poll_clock`. Also sets the
        loop's next wake-up: the earliest pending deadline.
        """
        for key in self._stale:
            zone = self._engines.get(key)
            if zone is not None:
                self._queue_deadline(key, zone)
        self._stale.clear()
        out: list[tuple[IncidentRecord, datetime, TopicPartition, int]] = []
        now_ts = now.timestamp()
        wake: float | None = None
        budget_end = time.perf_counter() + _POLL_BUDGET_S
        polled = 0
        self._poll_unfinished = False
        for tp, heap in self._deadlines.items():
            part = self._partitions.get(tp)
            if part is None:
                continue  # revoked (its heap goes with it)
            caught_up = self._caught_up(tp, part)
            if caught_up:
                part.caught_up_at = now
            if heap and heap[0][0] <= now_ts:
                # A partition replaying a backlog closes windows by its event clock, which
                # is behind: its due-by-wall-clock windows stay queued, untouched.
                at = poll_clock(
                    now,
                    part.event_clock,
                    caught_up=caught_up,
                    paused=self._paused,
                    caught_up_at=part.caught_up_at,
                    settle=self._settle,
                )
                at_ts = at.timestamp()
                while heap and heap[0][0] <= at_ts:
                    if polled and time.perf_counter() >= budget_end:
                        self._poll_unfinished = True  # the rest after an I/O pause
                        break
                    ts, _, name, zone = heapq.heappop(heap)
                    key = (tp, name)
                    if self._engines.get(key) is not zone or zone.queued != ts:
                        continue  # superseded: the zone was re-queued or dropped since
                    deadline = zone.deadline
                    assert deadline is not None
                    zone.queued = None
                    metrics.WINDOW_CLOSE_DELAY.observe(max(0.0, now_ts - ts))
                    # Refreshed before this poll (stale zones are refreshed above and after
                    # every poll), so it covers every pulse the closing windows hold.
                    floor = zone.retained if zone.retained is not None else part.next_offset
                    produced = zone.engine.poll(at)
                    polled += 1
                    out.extend((incident, deadline, tp, floor or 0) for incident in produced)
                    zone.health_changed |= bool(produced)
                    zone.stale = zone.polled = True
                    self._touched.add(key)
                    self._queue_deadline(key, zone)
            while heap and (
                self._engines.get((tp, heap[0][2])) is not heap[0][3]
                or heap[0][3].queued != heap[0][0]
            ):
                heapq.heappop(heap)  # drop superseded entries so the wake-up below is real
            if heap and (wake is None or heap[0][0] < wake):
                wake = heap[0][0]
        self._next_wake = wake
        return out

    def _refresh(self, key: tuple[TopicPartition, str], zone: _Zone) -> None:
        """Refresh a zone's caches if stale, and with them the running retained total and its
        partition's lowest retained offset."""
        if zone.stale:
            held = zone.retained
            self._pending_total += zone.refresh()
            # Only a change can move the partition's floor (most refreshes follow an add,
            # which never moves a held offset: updating it anyway cost ~2 % of the loop).
            if zone.retained != held:
                part = self._partitions.get(key[0])
                if part is not None:
                    part.floors.update(key[1], zone.retained)

    def _queue_deadline(self, key: tuple[TopicPartition, str], zone: _Zone) -> None:
        """Refresh a zone's caches and (re-)queue its next deadline if it changed."""
        self._refresh(key, zone)
        deadline = zone.deadline
        ts = None if deadline is None else deadline.timestamp()
        if ts != zone.queued:
            zone.queued = ts
            if ts is not None:
                heap = self._deadlines.setdefault(key[0], [])
                heapq.heappush(heap, (ts, next(self._deadline_seq), key[1], zone))

    async def _send(
        self, produced: list[tuple[IncidentRecord, datetime, TopicPartition, int]]
    ) -> None:
        """Hand incidents to the producer (keyed by incident_id); waits neither for acks nor
        for the requests to go out (the caller's next I/O pause sends them).

        Each stays in ``_unacked`` (holding back its partition's commits) until its ack
        callback runs.
        """
        if not produced:
            return
        assert self._producer is not None
        published_at = self._clock()
        for incident, due, tp, floor in produced:
            record = incident.model_copy(update={"published_at": published_at})
            future = await self._producer.send(
                self.settings.incidents_topic,
                value=encode(record),
                key=record.incident_id.encode(),
            )
            item = _Sent(record, due, tp, floor, future)
            self._unacked.add(item)
            future.add_done_callback(functools.partial(self._on_ack, item))

    def _on_ack(self, item: _Sent, future: asyncio.Future[object]) -> None:
        """The producer's verdict on one incident: acked (observe it) or failed (retried by
        the next step; a cancelled send only happens when the producer is closed)."""
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._failed.append((item, error))
            return
        self._unacked.discard(item)
        acked_mono = time.monotonic()
        metrics.PUBLISH_ACK_LATENCY.observe(acked_mono - item.sent_mono)
        self._observe_published(item.record, item.due, acked_mono, self._clock())

    async def _retry_failed_sends(self) -> None:
        """Re-send incidents whose send failed, with backoff until ``produce_timeout_s``;
        then the error is raised (the loop dies, nothing more committed). Blocks meanwhile:
        the broker is in trouble, and work behind it should wait."""
        while self._failed:
            item, error = self._failed.pop(0)
            if not isinstance(error, KafkaError):
                raise error
            deadline = time.monotonic() + self.settings.produce_timeout_s
            await self._resend(item.record, error, deadline)
            self._unacked.discard(item)
            self._observe_published(item.record, item.due, time.monotonic(), self._clock())

    async def _await_acks(self) -> None:
        """Wait until every incident sent so far is acknowledged (acks=all) or retried."""
        while self._unacked:
            await asyncio.wait([item.future for item in self._unacked])
            await self._retry_failed_sends()

    async def _resend(self, record: IncidentRecord, error: KafkaError, deadline: float) -> None:
        assert self._producer is not None
        delay = 0.1
        while True:
            log.warning(
                "publishing an incident failed; retrying",
                extra={"incident_id": record.incident_id, "error": repr(error)},
            )
            if time.monotonic() + delay > deadline:
                raise error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                await self._producer.send_and_wait(
                    self.settings.incidents_topic,
                    value=encode(record),
                    key=record.incident_id.encode(),
                )
                return
            except KafkaError as exc:
                error = exc

    def _observe_published(
        self, incident: IncidentRecord, due: datetime, acked_mono: float, acked_wall: datetime
    ) -> None:
        metrics.INCIDENTS_PUBLISHED.labels(incident.classification, incident.event).inc()
        consumed = [
            self._consumed_at[k]
            for rnd in incident.round_details
            for k in rnd.detection_keys
            if k in self._consumed_at
        ]
        # The window could close at its deadline at the earliest: waiting for it is physics.
        due_mono = acked_mono - max(0.0, (acked_wall - due).total_seconds())
        start = max([due_mono, *consumed])
        metrics.PROCESSING_LATENCY.observe(max(0.0, acked_mono - start))
        e2e = (acked_wall - incident.first_detection_received_at).total_seconds()
        metrics.END_TO_END_LATENCY.observe(max(0.0, e2e))
        log.info(
            "incident published",
            extra={
                "incident_id": incident.incident_id,
                "version": incident.version,
                "event": incident.event,
                "zone": incident.zone,
                "classification": incident.classification,
                "rounds": incident.rounds,
            },
        )

    def _commit_offsets(self, only: Iterable[TopicPartition] | None = None) -> None:
        wanted = set(self._partitions) if only is None else set(only)
        floors: dict[TopicPartition, int] = {}
        for item in self._unacked:
            floors[item.tp] = min(item.floor, floors.get(item.tp, item.floor))
        for key in self._stale:  # (the next poll still queues their deadlines)
            zone = self._engines.get(key)
            if zone is not None:
                self._refresh(key, zone)
        for tp in wanted:
            part = self._partitions.get(tp)
            if part is None or part.next_offset is None:
                continue
            retained = [part.floors.lowest(), floors.get(tp)]
            self._commits.advance(tp, commit_offset(part.next_offset, retained))

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        self._commit_offsets(only)
        try:
            await self._commits.commit(self._consumer, only)
        except KafkaError as exc:
            # A rebalance is under way: the revoke hook (or the next step) commits again.
            log.warning("offset commit failed; will retry", extra={"error": repr(exc)})

    async def _commit_in_background(self) -> None:
        """The offsets advanced by the step that started this; KafkaError is only logged."""
        assert self._consumer is not None
        try:
            await self._commits.commit(self._consumer)
        except KafkaError as exc:
            log.warning("offset commit failed; will retry", extra={"error": repr(exc)})

    async def _finish_commit(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for a background commit in flight; re-raises what it raised."""
        task = self._commit_task
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=timeout_s)
            if done:
                self._commit_task = None
                task.result()

    def _retained(self) -> int:
        # Kept as a running total by the zones' refreshes: summing thousands of mostly idle
        # zones every step cost a sixth of the loop. Exact after a step's final poll, which
        # refreshes every zone touched in the step.
        return self._pending_total

    def _back_pressure(self) -> None:
        assert self._consumer is not None
        retained = self._retained()
        metrics.RETAINED_DETECTIONS.set(retained)
        pause = should_pause(
            retained,
            self._paused,
            high=self.settings.max_retained,
            low=self.settings.resume_retained,
        )
        if pause == self._paused:
            return
        assigned = self._consumer.assignment()
        if pause:
            self._consumer.pause(*assigned)
            log.warning("pausing fetch: too many retained detections", extra={"retained": retained})
        else:
            self._consumer.resume(*assigned)
            log.info("resuming fetch", extra={"retained": retained})
        self._paused = pause
        metrics.PARTITIONS_PAUSED.set(1 if pause else 0)

    def _observe(self, mono: float) -> None:
        """Ignored-detection counters and sensor health of the zones touched, lag, gauges.

        Health is re-evaluated only for zones that located a round, at most once per
        ``health_interval_s`` per zone (a summary costs O(sensors x window))."""
        assert self._consumer is not None
        for key in self._touched:
            zone = self._engines.get(key)
            if zone is None:
                continue
            engine = zone.engine
            counts = (engine.duplicates, engine.late, engine.same_onset, engine.rounds_merged)
            for reason, now_count, seen in zip(
                ("duplicate", "late", "same_onset", "round_merged"), counts, zone.ignored_seen,
                strict=True,
            ):
                if now_count > seen:
                    metrics.DETECTIONS_IGNORED.labels(reason).inc(now_count - seen)
            zone.ignored_seen = counts
            if zone.health_changed:
                self._health_pending.add(key)
            zone.health_changed = False
        self._touched.clear()
        for key in list(self._health_pending):
            zone = self._engines.get(key)
            if zone is None:
                self._health_pending.discard(key)
            elif mono >= self._health_due.get(key[1], 0.0):
                self._health_due[key[1]] = mono + self.settings.health_interval_s
                self._check_health(key[1], zone.engine.sensor_health())
                self._health_pending.discard(key)
        for tp, part in self._partitions.items():
            with contextlib.suppress(AssertionError):
                high = self._consumer.highwater(tp)
                if high is not None and part.next_offset is not None:
                    metrics.CONSUMER_LAG.labels(str(tp.partition)).set(high - part.next_offset)
        metrics.ZONES.set(len(self._engines))
        metrics.SENSORS_FLAGGED.set(self._flagged_count)

    def _check_health(self, zone: str, health: Mapping[str, SensorHealth]) -> None:
        flagged = self._flagged.setdefault(zone, set())
        new, recovered = health_changes(flagged, health, self.config)
        for sensor_id, h in health.items():
            metrics.SENSOR_MEDIAN_RESIDUAL.labels(zone, sensor_id).set(h.median_residual_s)
        for sensor_id in sorted(new):
            h = health[sensor_id]
            metrics.SENSOR_FLAGGED.labels(zone, sensor_id).set(1)
            log.warning(
                "sensor flagged: its arrivals are consistently off (clock drift?); "
                "locations near it degrade",
                extra={
                    "zone": zone,
                    "sensor_id": sensor_id,
                    "median_residual_s": h.median_residual_s,
                    "rejected_share": h.rejected_share,
                    "samples": h.samples,
                },
            )
        for sensor_id in sorted(recovered):
            metrics.SENSOR_FLAGGED.labels(zone, sensor_id).set(0)
            log.info("sensor healthy again", extra={"zone": zone, "sensor_id": sensor_id})
        flagged |= new
        flagged -= recovered
        self._flagged_count += len(new) - len(recovered)

    # ------------------------------------------------------------------ rebalance
    async def _on_assign(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._partitions.setdefault(tp, _Partition())
        if self._paused and self._consumer is not None and assigned:
            self._consumer.pause(*assigned)
        log.info("partitions assigned", extra={"partitions": sorted(p.partition for p in assigned)})

    async def _before_revoke(self, revoked: set[TopicPartition]) -> None:
        """Commit what is finished on the revoked partitions, then drop their engines.

        Their uncommitted detections are re-delivered to the next owner (possibly us again),
        which rebuilds the same state from them.
        """
        async with self._lock:
            if self._consumer is not None:
                # Hand over as little to re-publish as possible: let outstanding acks land.
                # (Not required for safety: commits stay below unacknowledged floors.)
                try:
                    await asyncio.wait_for(self._await_acks(), self.settings.produce_timeout_s)
                except (TimeoutError, KafkaError) as exc:
                    log.warning(
                        "incidents unacknowledged at hand-back; the next owner re-publishes",
                        extra={"error": repr(exc)},
                    )
                await self._finish_commit()
                await self._commit(revoked)
            self._unacked = {item for item in self._unacked if item.tp not in revoked}
            for tp in revoked:
                part = self._partitions.pop(tp, None)
                self._deadlines.pop(tp, None)
                for zone in part.zones if part is not None else ():
                    dropped = self._engines.pop((tp, zone), None)
                    if dropped is not None:
                        self._pending_total -= dropped.pending
                    self._health_pending.discard((tp, zone))
            self._commits.forget(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in revoked)})


async def _let_io_run() -> None:
    """Give the event loop a few turns, so that I/O moves on between chunks of engine work.

    aiokafka takes one loop turn per hop (measured on the embedded broker, aiokafka 0.14):
    3 turns after ``send()`` before the request is on the wire (sender woken, request task
    started, written), and 4 after the answer arrived before the send's future is done
    (transport -> connection reader -> request future -> sender -> batch), whose callbacks
    (our ``_on_ack``) run in the next. With fewer turns an ack waits for one more chunk of
    engine work per missing hop: with 1 turn after sending and 3 per pause, an incident's
    ack took three chunks (ack p50 10 ms, p99 53 ms at 2,000 det/s). A turn with nothing
    ready costs one non-blocking poll of the selector (a few microseconds)."""
    for _ in range(_IO_TURNS):
        await asyncio.sleep(0)


def _pending_count(engine: ZoneEngine) -> int:
    """Undecided detections an engine holds (for back-pressure and the retained gauge)."""
    return engine.pending_count()
