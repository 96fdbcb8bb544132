"""Nothing is lost when dispatch dies, and instances sharing the database never double-send."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from tests.integration.dispatch.helpers import admin, eventually, incident, square


async def _subscribe_all(service, urls: list[str]) -> None:  # type: ignore[no-untyped-def]
    async with admin(service) as client:
        for url in urls:
            response = await client.post(
                "/v1/subscriptions",
                json={
                    "name": "pd",
                    "channel": "webhook",
                    "url": url,
                    "geofence": square(-79.99, 40.44),
                },
            )
            assert response.status_code == 201


async def _delivered(database_url: str, n: int) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return (
            await conn.fetchval(
                "SELECT count(*) FROM dispatch_deliveries WHERE status = 'delivered'"
            )
            == n
        )
    finally:
        await conn.close()


async def test_killed_after_the_commit_before_sending_delivers_after_restart(
    make_settings, services, receivers, publish, database_url
):
    first = await services(make_settings(workers=False))  # commits outbox rows, never sends
    subscribers = [await receivers() for _ in range(3)]
    await _subscribe_all(first, [r.url for r in subscribers])
    record = incident()
    await publish(record)

    async def outbox_written() -> bool:
        async with admin(first) as client:
            rows = (await client.get("/v1/deliveries")).json()
        return len(rows) == 3

    await eventually(outbox_written, what="outbox rows committed")
    await first.crash()

    await services(make_settings())  # a new instance, same database
    await eventually(lambda: _delivered(database_url, 3), what="delivered after restart")
    await asyncio.sleep(0.3)  # would any second send show up?
    for receiver in subscribers:
        assert len(receiver.received) == 1


async def test_killed_while_sending_the_claim_expires_and_another_instance_delivers(
    make_settings, services, receivers, publish, database_url
):
    settings = make_settings(lease_s=2.5)
    first = await services(settings)
    slow = await receivers(hang=True)  # holds the first attempt open
    await _subscribe_all(first, [slow.url])
    await publish(incident())
    await slow.wait_for(1)
    await first.crash()  # dies mid-request: the row stays claimed until its lease runs out

    slow.hang = False
    await services(settings)
    await eventually(lambda: _delivered(database_url, 1), timeout_s=10, what="re-delivered")
    ids = [r.headers["webhook-id"] for r in slow.received]
    assert len(ids) == 2 and len(set(ids)) == 1  # the retry of the same alert, same id


async def test_two_instances_never_both_deliver_the_same_row(
    make_settings, services, receivers, publish, database_url
):
    subscribers = [await receivers() for _ in range(4)]
    settings = make_settings(claim_batch=4)
    a = await services(settings)
    b = await services(settings)
    await _subscribe_all(a, [r.url for r in subscribers])
    records = [incident() for _ in range(50)]
    await asyncio.gather(*(publish(r) for r in records))
    await eventually(lambda: _delivered(database_url, 200), timeout_s=20, what="200 deliveries")
    await asyncio.sleep(0.3)
    sent = Counter(r.headers["webhook-id"] for s in subscribers for r in s.received)
    assert len(sent) == 200
    assert set(sent.values()) == {1}
    assert a.workers is not None and b.workers is not None
    assert a.workers.attempts_made > 0 and b.workers.attempts_made > 0
    assert a.workers.attempts_made + b.workers.attempts_made == 200
