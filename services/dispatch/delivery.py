"""Delivery workers: claim outbox rows, send them, record every attempt.

One :class:`DeliveryWorkers` per instance. Its loop claims due rows (``FOR UPDATE SKIP
LOCKED`` + lease, see :mod:`services.dispatch.store`) while it has free send slots, and runs
one task per row. It wakes on ``NOTIFY`` from any instance's commit, or every
``poll_interval_s`` (retries falling due, expired leases).

Isolation of slow or dead receivers:

* at most ``per_host_concurrency`` sends at once per endpoint (host:port); an endpoint at
  its limit is excluded from the next claims, so its backlog never takes the slots of
  others;
* a circuit breaker per endpoint (:mod:`services.dispatch.breaker`); while it is open the
  endpoint's rows are not claimed at all (they wait, no attempt is spent), and those that
  outlive the retry age limit meanwhile go to dead letter (:func:`store.expire_overdue`);
* httpx timeouts from the settings bound every attempt, and the lease outlives them.

What happens after an attempt is decided by the pure retry policy
(:mod:`services.dispatch.retry`), and which row of an incident goes to a subscriber next by
the pure ordering decision (:mod:`services.dispatch.ordering`, applied by
:func:`store.claim_due`); this module only carries them out.

A webhook body is rendered once, right after its row is first claimed, and stored before it
is sent (:func:`store.confirm`); retries and replays send the stored bytes. Any
exception of a send is an attempt with its error: a URL the HTTP client cannot build is
refused (failed at once, replayable after the fix); anything else unexpected is retried
under the retry policy like a network error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpcore
import httpx
import orjson

from services.dispatch import clips, formats, metrics, slo, store
from services.dispatch.breaker import CircuitBreaker
from services.dispatch.formats import cap
from services.dispatch.gazetteer import Place
from services.dispatch.model import push_target_from_json
from services.dispatch.push import HttpRequest, fcm, send, webpush
from services.dispatch.push.channels import PushChannels
from services.dispatch.retry import (
    AttemptOutcome,
    Delivered,
    Disable,
    GiveUp,
    HttpResponse,
    NetworkError,
    Refused,
    Retry,
    RetryPolicy,
    decide,
)
from services.dispatch.settings import DispatchSettings
from services.dispatch.signing import active_secrets, sign_headers
from services.dispatch.targets import GuardedNetworkBackend
from shared.clock import Clock, utc_now
from shared.schemas import IncidentRecord

log = logging.getLogger("shotline.dispatch.delivery")


def _describe(outcome: AttemptOutcome) -> tuple[int | None, str | None]:
    """(status code, error text) of an attempt outcome, for the attempt log."""
    if isinstance(outcome, HttpResponse):
        if 200 <= outcome.status < 300:
            return outcome.status, None
        detail = outcome.body[:200].decode("utf-8", "replace").strip()
        return outcome.status, f"HTTP {outcome.status}" + (f": {detail}" if detail else "")
    return None, f"{type(outcome).__name__}: {getattr(outcome, 'detail', '')}"[:500]


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through a :class:`GuardedNetworkBackend`.

    (httpx takes no network backend, so its connection pool is rebuilt with one; a test in
    ``tests/integration/dispatch`` fails if a loopback receiver is reached without being
    allowed.)
    """

    def __init__(self, backend: GuardedNetworkBackend, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def build_http_client(settings: DispatchSettings) -> httpx.AsyncClient:
    """The one HTTP client of an instance (connection reuse across deliveries).

    It connects only to public addresses and ``settings.allowed_target_networks`` (see
    :mod:`services.dispatch.targets`).
    """
    limits = httpx.Limits(
        max_connections=settings.max_in_flight,
        max_keepalive_connections=min(settings.max_in_flight, 256),
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.write_timeout_s,
            pool=settings.pool_timeout_s,
        ),
        transport=_GuardedTransport(
            GuardedNetworkBackend(settings.allowed_target_networks), limits
        ),
        follow_redirects=False,  # a receiver that moved must be re-registered, not guessed
        headers={"user-agent": "shotline-dispatch/1"},
    )


class _Finisher:
    """Writes finished attempts in batches: whatever finished while the last write ran goes
    in the next one (no added wait: a lone result is written at once)."""

    #: Rows per statement at most.
    MAX_BATCH = 256

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._queue: list[
            tuple[store.ClaimedDelivery, store.AttemptResult, asyncio.Future[bool]]
        ] = []
        self._wake = asyncio.Event()

    async def finish(self, d: store.ClaimedDelivery, result: store.AttemptResult) -> bool:
        """Record it; False if the lease was lost. Raises the database's error."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((d, result, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[: self.MAX_BATCH]
                del self._queue[: self.MAX_BATCH]
                try:
                    written = await store.finish_attempts(self.pool, [(d, r) for d, r, _ in batch])
                except Exception as exc:  # each waiting send handles it (its task fails)
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for d, _, future in batch:
                    if not future.done():
                        future.set_result(d.delivery_id in written)


class DeliveryWorkers:
    """Claims and sends deliveries until stopped. ``start()`` / ``stop(timeout_s)``."""

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        pool: asyncpg.Pool,
        database_url: str,
        http: httpx.AsyncClient | None = None,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.database_url = database_url
        self.clock = clock
        self.jitter = jitter
        self.policy = settings.retry_policy()
        # Raises ValueError at start-up on a bad VAPID key or service account (fail fast).
        self.push = PushChannels(
            vapid=None
            if settings.vapid_private_key is None
            else webpush.VapidConfig(
                private_key=settings.vapid_private_key.get_secret_value(),
                subject=settings.vapid_subject,
                ttl_s=settings.webpush_ttl_s,
            ),
            fcm_account=None
            if settings.fcm_service_account is None
            else fcm.ServiceAccount.from_json(_service_account(settings)),
            fcm_base_url=settings.fcm_base_url,
            fcm_token_uri=settings.fcm_token_url,
            ttl_s=settings.webpush_ttl_s,
        )
        self._own_http = http is None
        self.http = http or build_http_client(settings)
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_endpoint: dict[str, int] = defaultdict(int)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listener: asyncpg.Connection | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._gauges_task: asyncio.Task[None] | None = None
        self._finisher = _Finisher(pool)
        self._finisher_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.attempts_made = 0  # by this instance (observability in tests and logs)

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN for new outbox rows and start the claim loop."""
        await self._listen()
        self._loop_task = asyncio.create_task(self._run(), name="dispatch-claims")
        self._gauges_task = asyncio.create_task(self._refresh_gauges(), name="dispatch-gauges")
        self._finisher_task = asyncio.create_task(self._finisher.run(), name="dispatch-finish")

    async def _listen(self) -> None:
        """(Re)open the LISTEN connection that wakes the loop on new outbox rows."""
        self._listener = await asyncpg.connect(self.database_url)
        await self._listener.add_listener(store.NOTIFY_CHANNEL, self._notified)

    async def _ensure_listening(self) -> None:
        # Without it the loop still works, only slower (every poll_interval_s).
        if self._listener is None or self._listener.is_closed():
            try:
                await self._listen()
                log.info("LISTEN connection re-opened")
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                self._listener = None

    def _notified(self, *_: object) -> None:
        self._wake.set()

    def wake(self) -> None:
        """Look for due rows now (same-process producers; NOTIFY does it across processes)."""
        self._wake.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming, let in-flight sends finish for up to ``timeout_s``, then cancel them.

        A cancelled send leaves its row claimed until the lease expires; another worker then
        retries it (at-least-once, same webhook-id).
        """
        self._stopping = True
        for task in (self._loop_task, self._gauges_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._finisher_task is not None:  # after the sends: they write through it
            self._finisher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._finisher_task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        if self._own_http:
            await self.http.aclose()

    async def crash(self) -> None:
        """Tests only: stop dead, like a killed process (no waiting, no releasing claims)."""
        self._stopping = True
        tasks = [t for t in (self._loop_task, self._gauges_task, self._finisher_task) if t] + list(
            self._inflight
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None
        if self._own_http:
            await self.http.aclose()

    # --- claiming ---------------------------------------------------------------------------

    def _blocked_endpoints(self, now: datetime) -> list[str]:
        blocked = [
            ep for ep, n in self._per_endpoint.items() if n >= self.settings.per_host_concurrency
        ]
        for ep, breaker in self._breakers.items():
            if not breaker.allows(now):
                blocked.append(ep)
        return blocked

    async def _run(self) -> None:
        backoff = 0.1
        expire_due = 0.0
        while not self._stopping:
            if time.monotonic() >= expire_due:
                # It scans the pending rows: every few seconds is precise enough for an age
                # limit of hours (a tenth of it, for short limits).
                expire_due = time.monotonic() + min(5.0, self.policy.max_age.total_seconds() / 10)
                await self._expire_overdue()
            free = self.settings.max_in_flight - len(self._inflight)
            limit = min(free, self.settings.claim_batch)
            batch = store.ClaimBatch([])
            claimed: list[store.ClaimedDelivery] = []
            if free > 0:
                try:
                    self._wake.clear()
                    batch = await store.claim_due(
                        self.pool,
                        limit=limit,
                        lease_s=self.settings.lease_s,
                        owner=self.settings.instance_id,
                        exclude_endpoints=self._blocked_endpoints(self.clock()),
                    )
                    metrics.SUPERSEDED.inc(batch.changed)
                    claimed = await self._render_first(batch)
                    backoff = 0.1
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                    log.warning("claiming deliveries failed; retrying", extra={"error": repr(exc)})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                excess = []
                per_host = self.settings.per_host_concurrency
                for delivery in claimed:
                    if self._per_endpoint.get(delivery.endpoint, 0) < per_host:
                        self._spawn(delivery)
                    else:
                        excess.append(delivery)  # its receiver is busy: leave it for later
                if excess:
                    await self._release(excess)
            if batch.changed or (claimed and batch.looked_at >= limit):
                continue  # probably more due right now (a re-planned row is due at once)
            await self._ensure_listening()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval_s)

    async def _expire_overdue(self) -> None:
        """Dead-letter rows past the age limit that no attempt will ever judge (their
        receiver's circuit is open, or no worker reached them in time); a database error
        is only logged (the next round tries again)."""
        try:
            expired = await store.expire_overdue(
                self.pool, max_age_s=self.policy.max_age.total_seconds()
            )
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("expiring overdue deliveries failed", extra={"error": repr(exc)})
            return
        for row in expired:
            metrics.DELIVERIES.labels("dead", row.channel).inc()
            # (an expired row ends its pair's wait: the next version may go)
            self._wake.set()
            log.warning(
                "delivery dead-lettered: past the age limit without a successful attempt",
                extra={
                    "delivery_id": row.delivery_id,
                    "webhook_id": row.webhook_id,
                    "endpoint": row.endpoint,
                },
            )

    async def _render_first(self, batch: store.ClaimBatch) -> list[store.ClaimedDelivery]:
        """Render the body of every claimed webhook row not rendered yet, then confirm the
        batch (:func:`store.confirm` stores the bodies); returns the rows to send. A row that
        cannot be rendered fails with the reason (see :meth:`_fail_unbuildable`)."""
        renderings: dict[int, store.Rendering] = {}
        failed: list[int] = []
        for d in batch.deliveries:
            if d.channel != "webhook" or d.body is not None:
                continue
            try:
                renderings[d.delivery_id] = await self._render(d)
            except Exception as exc:
                await self._fail_unbuildable(d, exc)
                failed.append(d.delivery_id)
        if not (batch.deliveries or batch.waits or batch.changed):
            return []
        return await store.confirm(self.pool, batch, renderings, failed=failed)

    async def _render(self, d: store.ClaimedDelivery) -> store.Rendering:
        """The body of a webhook row's first send (raises on bad input)."""
        record = IncidentRecord.model_validate(d.record)
        previous = None if d.previous is None else IncidentRecord.model_validate(d.previous)
        linked = d.format in ("json", "cap") and d.event != "cancelled"
        rendered = formats.render(
            d.format,  # type: ignore[arg-type]
            record,
            d.event,  # type: ignore[arg-type]
            sender=self.settings.sender,
            previous=previous,
            audio=await self._clip_links(record) if linked else None,
            message_id=d.webhook_id,
            references=d.references,
            place=None if d.place is None else Place.from_json(d.place),
        )
        ref = None
        if d.format == "cap":
            ref = cap.reference(self.settings.sender, record, d.webhook_id)
        return store.Rendering(rendered.body, rendered.content_type, d.format, d.url, ref)

    async def _fail_unbuildable(self, d: store.ClaimedDelivery, exc: Exception) -> None:
        # Our own failure (bad render input, push not configured, bad keys...): record it
        # on the row, where an operator sees it; a replay after the fix sends it again.
        log.warning(
            "could not build the request",
            extra={"delivery_id": d.delivery_id},
            exc_info=not isinstance(exc, ValueError),
        )
        error = f"cannot build the request: {type(exc).__name__}: {exc}"[:500]
        await self._finish(d, "failed", None, None, error, 0.0)

    async def _release(self, deliveries: list[store.ClaimedDelivery]) -> None:
        try:
            await store.release_many(self.pool, deliveries)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            # Not fatal: the lease expires and the rows become due again anyway.
            log.warning("could not release claims", exc_info=True)

    def _spawn(self, delivery: store.ClaimedDelivery) -> None:
        self._per_endpoint[delivery.endpoint] += 1
        metrics.IN_FLIGHT.inc()
        task = asyncio.create_task(self._deliver(delivery), name=f"deliver-{delivery.delivery_id}")
        self._inflight.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            self._inflight.discard(t)
            self._per_endpoint[delivery.endpoint] -= 1
            if self._per_endpoint[delivery.endpoint] <= 0:
                del self._per_endpoint[delivery.endpoint]
            metrics.IN_FLIGHT.dec()
            self._wake.set()  # a slot is free
            if not t.cancelled() and t.exception() is not None:
                log.error(
                    "delivery task failed; the row is retried when its lease expires",
                    extra={"delivery_id": delivery.delivery_id},
                    exc_info=t.exception(),
                )

        task.add_done_callback(_done)

    async def _refresh_gauges(self) -> None:
        while True:
            try:
                by_status = await store.counts(self.pool)
                metrics.QUEUE_DEPTH.set(by_status.get("pending", 0))
                metrics.DEAD_LETTERS.set(by_status.get("dead", 0))
                await slo.refresh(self.pool, self.clock())
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                log.warning("could not refresh delivery gauges", exc_info=True)
            await asyncio.sleep(5.0)

    # --- one delivery -----------------------------------------------------------------------

    def _breaker(self, endpoint: str) -> CircuitBreaker:
        if endpoint not in self._breakers:
            self._breakers[endpoint] = CircuitBreaker(
                failure_threshold=self.settings.breaker_failures,
                cooldown=timedelta(seconds=self.settings.breaker_reset_s),
                # a probe that never reports frees the slot once its lease is surely gone
                probe_timeout=timedelta(seconds=self.settings.lease_s),
            )
        return self._breakers[endpoint]

    def _policy(self, d: store.ClaimedDelivery) -> RetryPolicy:
        if d.channel == "webhook" or d.push is None:
            return self.policy
        return self.push.policy(push_target_from_json(d.push), self.policy)

    async def _deliver(self, d: store.ClaimedDelivery) -> None:
        """One attempt of one claimed row, start to finish (never raises but Cancelled)."""
        if d.sub_status != "active":
            await self._finish(d, "failed", None, None, "subscription disabled", 0.0)
            return
        started = self.clock()
        t0 = time.perf_counter()
        try:
            request = await self._build(d, started)
        except fcm.TokenError as exc:
            # the FCM token endpoint failed: transient like a failed send
            await self._decided(d, exc.outcome, started, time.perf_counter() - t0)
            return
        except Exception as exc:
            await self._fail_unbuildable(d, exc)
            return
        breaker = self._breaker(d.endpoint)
        now = self.clock()
        if not breaker.acquire(now):
            # Claimed just before the breaker opened: hand it back, no attempt spent.
            until = breaker.reopens_at() or now + timedelta(seconds=self.settings.breaker_reset_s)
            await store.defer(self.pool, d, until, "circuit open")
            metrics.DELIVERIES.labels("deferred", d.channel).inc()
            return
        outcome = await self._send(d, request)
        duration = time.perf_counter() - t0
        self.attempts_made += 1
        finished = self.clock()
        breaker.record(outcome, finished)
        metrics.ATTEMPT_DURATION.labels(d.channel).observe(duration)
        metrics.BREAKER_STATE.labels(d.endpoint).set(int(breaker.state(finished)))
        if d.push is not None:
            # e.g. FCM 401: the cached access token is dropped, the retry fetches a new one
            self.push.observe(push_target_from_json(d.push), outcome)
        await self._decided(d, outcome, started, duration, finished)

    async def _send(self, d: store.ClaimedDelivery, request: HttpRequest) -> AttemptOutcome:
        """One send; every exception but a cancellation is an outcome (an attempt)."""
        try:
            return await send(self.http, request)
        except httpx.InvalidURL as exc:
            # e.g. a host IDNA cannot encode: no retry can build it; fix it, then replay
            return Refused(f"the HTTP client cannot send to this URL: {exc}"[:500])
        except Exception as exc:
            log.exception("unexpected error while sending", extra={"delivery_id": d.delivery_id})
            return NetworkError(f"unexpected {type(exc).__name__}: {exc}"[:500])

    async def _decided(
        self,
        d: store.ClaimedDelivery,
        outcome: AttemptOutcome,
        started: datetime,
        duration: float,
        finished: datetime | None = None,
    ) -> None:
        """Apply the pure retry policy to an attempt's outcome and record it."""
        finished = finished or self.clock()
        decision = decide(
            d.budget_attempts + 1,
            outcome,
            now=finished,
            first_attempt_at=d.first_attempt_at or started,
            policy=self._policy(d),
            jitter=self.jitter,
        )
        status_code, error = _describe(outcome)
        if isinstance(decision, Delivered):
            await self._finish(d, "delivered", None, status_code, None, duration, started, finished)
            await self._observe_latency(d, finished)
        elif isinstance(decision, Retry):
            await self._finish(
                d, "retry", decision.at, status_code, error, duration, started, finished
            )
        elif isinstance(decision, GiveUp):
            outcome_name = "dead" if decision.exhausted else "failed"
            await self._finish(
                d, outcome_name, None, status_code, decision.reason, duration, started, finished
            )
        elif isinstance(decision, Disable):
            await self._finish(
                d, "failed", None, status_code, decision.reason, duration, started, finished
            )
            await self._disable_gone(d, decision.reason)

    async def _build(self, d: store.ClaimedDelivery, now: datetime) -> HttpRequest:
        """The exact request of this attempt: the stored body and the webhook-id on every
        attempt (only the signature's timestamp, and push encryption, change)."""
        record = IncidentRecord.model_validate(d.record)
        place = None if d.place is None else Place.from_json(d.place)
        event = d.event
        if d.channel == "webhook":
            assert d.url is not None
            if d.body is None or d.content_type is None:
                raise RuntimeError("a webhook row is sent only after its body was stored")
            headers = sign_headers(d.webhook_id, now, d.body, active_secrets(d.secrets, now))
            headers["content-type"] = d.content_type
            if record.exercise:  # (the body says so too, in every format)
                headers["shotline-exercise"] = "true"
            return HttpRequest("POST", d.url, headers, d.body)
        assert d.push is not None
        return await self.push.build(
            push_target_from_json(d.push), record, event, now=now, client=self.http, place=place
        )

    async def _clip_links(self, record: IncidentRecord) -> list[dict[str, str]] | None:
        """Signed links to the clips of the sensors that located ``record`` (if enabled)."""
        secret = self.settings.clip_url_secret
        if secret is None or record.event == "cancelled":
            return None
        links = await clips.links_for(
            self.pool, record, base=self.settings.public_url,
            secret=secret.get_secret_value(), ttl_s=self.settings.clip_link_ttl_s,
        )
        return [link.json() for link in links]

    async def _finish(
        self,
        d: store.ClaimedDelivery,
        outcome: str,
        next_at: datetime | None,
        status_code: int | None,
        error: str | None,
        duration: float,
        started: datetime | None = None,
        finished: datetime | None = None,
    ) -> None:
        now = self.clock()
        attempt = store.AttemptResult(
            started_at=started or now,
            finished_at=finished or now,
            duration_s=duration,
            status_code=status_code,
            error=error,
            outcome=outcome,
            next_attempt_at=next_at,
        )
        if await self._finisher.finish(d, attempt):
            metrics.DELIVERIES.labels(outcome, d.channel).inc()
        else:
            log.warning(
                "lease lost before the result was written (lease_s too short?)",
                extra={"delivery_id": d.delivery_id, "outcome": outcome},
            )
        if outcome == "dead":
            log.warning(
                "delivery dead-lettered",
                extra={"delivery_id": d.delivery_id, "webhook_id": d.webhook_id, "error": error},
            )

    async def _disable_gone(self, d: store.ClaimedDelivery, reason: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.disable_subscription(conn, d.subscription_id, reason)
            await store.fail_pending_of(conn, d.subscription_id, "subscription disabled: " + reason)
        metrics.SUBSCRIPTIONS_DISABLED.labels(d.channel).inc()
        log.warning(
            "subscription disabled", extra={"subscription_id": d.subscription_id, "reason": reason}
        )

    async def _observe_latency(self, d: store.ClaimedDelivery, acked: datetime) -> None:
        record = d.record
        try:
            due = slo.due_at(d.event, record)
        except (KeyError, ValueError):
            pass
        else:
            try:
                await slo.observe_acknowledged(
                    self.pool, d.delivery_id, d.event, d.channel, (acked - due).total_seconds()
                )
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                log.warning("could not record the SLO event", exc_info=True)
        try:
            shot = datetime.fromisoformat(record["shot_time"].replace("Z", "+00:00"))
            first = datetime.fromisoformat(
                record["first_detection_received_at"].replace("Z", "+00:00")
            )
        except (KeyError, ValueError):
            return
        metrics.SHOT_TO_ACK.labels(d.channel).observe((acked - shot).total_seconds())
        metrics.DETECTION_TO_ACK.labels(d.channel).observe((acked - first).total_seconds())
        metrics.CONSUMED_TO_ACK.labels(d.channel).observe((acked - d.created_at).total_seconds())


def _service_account(settings: DispatchSettings) -> dict[str, Any]:
    """The FCM service-account JSON: inline, or the path of a key file. Raises ValueError."""
    assert settings.fcm_service_account is not None
    raw = settings.fcm_service_account.get_secret_value().strip()
    if not raw.startswith("{"):
        from pathlib import Path

        try:
            raw = Path(raw).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read the FCM service-account file: {exc}") from None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("the FCM service account is not valid JSON") from None
    if not isinstance(info, dict):
        raise ValueError("the FCM service account must be a JSON object")
    return info
