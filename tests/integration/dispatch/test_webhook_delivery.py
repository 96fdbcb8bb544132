"""Webhooks: retries keep the webhook-id, dead letters can be replayed, 410 disables."""

from __future__ import annotations

import asyncio

from standardwebhooks import Webhook

from tests.integration.dispatch.helpers import admin, eventually, incident, square


async def _subscribe(client, url: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/subscriptions",
        json={
            "name": "pd",
            "channel": "webhook",
            "url": url,
            "geofence": square(-79.99, 40.44),
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _delivery(client, incident_id: str) -> dict:  # type: ignore[no-untyped-def]
    (row,) = (await client.get("/v1/deliveries", params={"incident_id": incident_id})).json()
    return (await client.get(f"/v1/deliveries/{row['delivery_id']}")).json()


async def test_a_flaky_receiver_gets_retries_with_the_same_webhook_id_and_valid_signatures(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=5))
    flaky = await receivers(script=[503, 500, 429])  # then 200
    async with admin(service) as client:
        sub = await _subscribe(client, flaky.url)
        record = incident()
        await publish(record)
        got = await flaky.wait_for(4)
        await eventually(
            lambda: _status_is(client, record.incident_id, "delivered"), what="delivered"
        )
        detail = await _delivery(client, record.incident_id)
    ids = {r.headers["webhook-id"] for r in got}
    assert ids == {detail["webhook_id"]}
    bodies = {r.body for r in got}
    assert len(bodies) == 1  # never a different alert for the same shot
    for r in got:
        Webhook(sub["secret"]).verify(r.body, r.headers)
    assert [a["status_code"] for a in detail["attempt_log"]] == [503, 500, 429, 200]
    assert [a["outcome"] for a in detail["attempt_log"]] == ["retry", "retry", "retry", "delivered"]
    assert all(a["duration_s"] >= 0 for a in detail["attempt_log"])


async def _status_is(client, incident_id: str, status: str) -> bool:  # type: ignore[no-untyped-def]
    rows = (await client.get("/v1/deliveries", params={"incident_id": incident_id})).json()
    return bool(rows) and all(r["status"] == status for r in rows)


async def test_a_dead_receiver_ends_in_dead_letter_and_replay_delivers_with_the_same_id(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=3))
    dead = await receivers(default=503)
    async with admin(service) as client:
        sub = await _subscribe(client, dead.url)
        record = incident()
        await publish(record)
        await eventually(lambda: _status_is(client, record.incident_id, "dead"), what="dead")
        dead_rows = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
        assert [r["incident_id"] for r in dead_rows] == [record.incident_id]
        assert len(dead.received) == 3

        dead.default = 200  # the receiver is back
        delivery_id = dead_rows[0]["delivery_id"]
        response = await client.post(f"/v1/deliveries/{delivery_id}/replay")
        assert response.status_code == 200, response.text
        await eventually(
            lambda: _status_is(client, record.incident_id, "delivered"), what="replayed"
        )
        again = await client.post(f"/v1/deliveries/{delivery_id}/replay")
        assert again.status_code == 409  # only dead/failed rows can be replayed
    assert len(dead.received) == 4
    assert {r.headers["webhook-id"] for r in dead.received} == {dead_rows[0]["webhook_id"]}
    Webhook(sub["secret"]).verify(dead.received[-1].body, dead.received[-1].headers)


async def test_bulk_replay_sends_every_matching_dead_letter(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=1))
    down = await receivers(default=500)
    async with admin(service) as client:
        await _subscribe(client, down.url)
        records = [incident() for _ in range(3)]
        for record in records:
            await publish(record)
        await eventually(lambda: _count(client, "dead", 3), what="three dead letters")
        down.default = 204
        response = await client.post("/v1/deliveries/replay", json={"status": "dead"})
        assert response.json()["replayed"] == 3
        await eventually(lambda: _count(client, "delivered", 3), what="all replayed")
        metrics = (await client.get("/metrics")).text
    assert "shotline_dispatch_deliveries_total" in metrics


async def _count(client, status: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len((await client.get("/v1/deliveries", params={"status": status})).json()) == n


async def test_a_4xx_fails_at_once_and_410_gone_disables_the_subscription(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=5))
    refusing = await receivers(default=400)
    gone = await receivers(default=410)
    async with admin(service) as client:
        await _subscribe(client, refusing.url)
        sub_gone = await _subscribe(client, gone.url)
        record = incident()
        await publish(record)
        await eventually(lambda: _status_is(client, record.incident_id, "failed"), what="fail")

        async def disabled() -> bool:
            path = f"/v1/subscriptions/{sub_gone['subscription_id']}"
            return (await client.get(path)).json()["status"] == "disabled"

        await eventually(disabled, what="subscription disabled")
        sub = (await client.get(f"/v1/subscriptions/{sub_gone['subscription_id']}")).json()
        later = incident()
        await publish(later)
        await eventually(lambda: _count(client, "failed", 3), what="later one failed too")
    assert len(refusing.received) == 2  # one attempt each, no retries
    assert len(gone.received) == 1  # disabled after the 410: never called again
    assert sub["status"] == "disabled"
    assert "410" in sub["disabled_reason"]


async def test_a_rotated_secret_overlaps_both_signatures_verify(
    make_settings, services, receivers, publish
):
    service = await services(make_settings())
    receiver = await receivers()
    async with admin(service) as client:
        sub = await _subscribe(client, receiver.url)
        rotated = await client.post(
            f"/v1/subscriptions/{sub['subscription_id']}/rotate-secret", json={"overlap_s": 600}
        )
        assert rotated.status_code == 200
        new_secret = rotated.json()["secret"]
        listed = (await client.get(f"/v1/subscriptions/{sub['subscription_id']}")).json()
        await publish(incident())
        (got,) = await receiver.wait_for(1)
    assert new_secret != sub["secret"]
    assert "secret" not in listed  # shown only by create and rotate
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(sub["secret"]).verify(got.body, got.headers)  # old one still valid
    Webhook(new_secret).verify(got.body, got.headers)


async def test_a_hanging_receiver_gets_bounded_concurrency_and_does_not_delay_the_others(
    make_settings, services, receivers, publish
):
    service = await services(
        make_settings(per_host_concurrency=2, read_timeout_s=2.0, lease_s=5.0, max_attempts=5)
    )
    hanging, healthy = await receivers(hang=True), await receivers()
    async with admin(service) as client:
        await _subscribe(client, hanging.url)
        await _subscribe(client, healthy.url)
        records = [incident() for _ in range(8)]
        loop = asyncio.get_running_loop()
        began = loop.time()
        for record in records:
            await publish(record)
        await healthy.wait_for(8, timeout_s=5)
        took = loop.time() - began
    assert took < 1.5  # well inside one read timeout of the hanging receiver
    assert hanging.max_in_flight == 2  # per-host bound: never more at once


async def test_alerts_held_behind_an_open_circuit_go_to_dead_letter_at_the_age_limit(
    make_settings, services, receivers, publish
):
    # Two failures open the receiver's circuit for longer than the test; the age limit is 2 s.
    # Rows behind an open circuit are never claimed, so no attempt ever judges their age:
    # without the sweep they would stay pending (out of the dead-letter gauge) until the
    # receiver came back, and then be sent however late.
    max_age_s = 2.0
    settings = make_settings(
        max_attempts=50, breaker_failures=2, breaker_reset_s=60.0, retry_max_age_s=max_age_s
    )
    service = await services(settings)
    down = await receivers(default=503)
    async with admin(service) as client:
        await _subscribe(client, down.url)
        tried = incident()
        await publish(tried)
        await eventually(lambda: _received(down, 2), what="two failures (circuit open)")
        held = incident()  # queued while the circuit is open: never attempted
        await publish(held)
        await eventually(lambda: _status_is(client, held.incident_id, "pending"), what="queued")

        await eventually(lambda: _status_is(client, held.incident_id, "dead"), what="expired")
        await eventually(lambda: _status_is(client, tried.incident_id, "dead"), what="expired")
        detail = await _delivery(client, held.incident_id)
        assert detail["attempt_log"] == []  # dead-lettered without being sent
        assert "age limit" in detail["last_error"]

        # A replay restarts the clock: the age counts from the replay, not from the queueing.
        response = await client.post(f"/v1/deliveries/{detail['delivery_id']}/replay")
        assert response.status_code == 200, response.text
        await asyncio.sleep(max_age_s / 4)  # the sweep runs every poll_interval_s (0.1 s)
        assert await _status_is(client, held.incident_id, "pending")
        await eventually(lambda: _status_is(client, held.incident_id, "dead"), what="re-expired")
        metrics = (await client.get("/metrics")).text
    assert len(down.received) == 2  # nothing was sent behind the open circuit
    assert 'shotline_dispatch_deliveries_total{channel="webhook",status="dead"}' in metrics


async def _received(receiver, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len(receiver.received) >= n
