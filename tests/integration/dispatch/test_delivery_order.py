"""A CAD receives an incident's story in order; one webhook-id names one body; a re-scored
incident reaches who was alerted as an explicit cancel or a downgrade; a send's failure is
always an attempt."""

from __future__ import annotations

import asyncio
import itertools
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import timedelta

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from services.dispatch import store
from services.dispatch.main import DispatchService
from services.dispatch.push.webpush import generate_vapid_private_key
from shared.schemas import IncidentRecord
from tests.integration.dispatch.helpers import Received, admin, eventually, incident, square
from tests.support.push_receivers import WebPushReceiver, running
from tests.unit.dispatch.standards import cap_schema

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
LAT, LON = 40.44, -79.99
FENCE = square(LON, LAT)


async def _subscribe(client, **fields) -> dict:  # type: ignore[no-untyped-def]
    body = {"name": "pd", "channel": "webhook", "geofence": FENCE, **fields}
    response = await client.post("/v1/subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _story(n: int, *, cancel_last: bool = True, **first) -> list[IncidentRecord]:  # type: ignore[no-untyped-def]
    """Versions 1..n of one incident (the last one cancelled if ``cancel_last``)."""
    v1 = incident(LAT, LON, **first)
    versions = [v1]
    for version in range(2, n + 1):
        event = "cancelled" if cancel_last and version == n else "updated"
        versions.append(
            v1.model_copy(
                update={
                    "version": version,
                    "event": event,
                    "rounds": v1.rounds + version,
                    "published_at": v1.published_at + timedelta(seconds=version),
                }
            )
        )
    return versions


def _json_versions(received: list[Received]) -> list[tuple[int, str]]:
    return [
        (doc["data"]["version"], doc["data"]["event"])
        for doc in (orjson.loads(r.body) for r in received)
    ]


async def _rows(client, incident_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    response = await client.get("/v1/deliveries", params={"incident_id": incident_id})
    return response.json()


async def _settled(client, incident_id: str, n: int | None = None) -> bool:  # type: ignore[no-untyped-def]
    rows = await _rows(client, incident_id)
    return (
        bool(rows) and (n is None or len(rows) >= n) and all(r["status"] != "pending" for r in rows)
    )


async def test_a_failing_receiver_gets_the_versions_in_order_collapsed_and_nothing_after_the_cancel(
    make_settings, services, receivers, publish
):
    # The receiver fails its first 6 requests (50 ms apart) while all 5 versions arrive: they
    # must neither overtake the Alert nor each other, and once it recovers it gets the
    # current state (collapsed), with nothing after the cancel. A healthy subscriber of the
    # same incidents and another incident of the failing one are not held up meanwhile.
    service = await services(make_settings(max_attempts=12))
    flaky = await receivers(script=[503] * 6)
    healthy = await receivers()
    async with admin(service) as client:
        await _subscribe(client, url=flaky.url)
        await _subscribe(client, url=healthy.url)
        story = _story(5)
        for record in story:
            await publish(record)
        other = incident(LAT, LON)
        await publish(other)
        await eventually(lambda: _settled(client, story[0].incident_id, 10), what="settled")
        await eventually(lambda: _settled(client, other.incident_id, 2), what="other settled")
        rows = await _rows(client, story[0].incident_id)

    for rx in (flaky, healthy):
        mine = [r for r in rx.received if story[0].incident_id.encode() in r.body]
        told = _json_versions(mine)
        versions = [v for v, _ in told]
        assert versions == sorted(versions), f"out of order: {told}"
        assert told[0][1] == "created", told  # the story starts with the Alert
        assert told[-1] == (5, "cancelled"), told  # ... and ends with the cancel, nothing after
        alerts = {
            h.headers["webhook-id"] for h, (_, e) in zip(mine, told, strict=True) if e == "created"
        }
        assert len(alerts) == 1, told  # one Alert (retried under one id), never a second
    flaky_told = _json_versions(
        [r for r in flaky.received if story[0].incident_id.encode() in r.body]
    )
    # collapsed: fewer distinct versions than were published reached the failing receiver
    assert len({v for v, _ in flaky_told}) < 5, flaky_told
    statuses = {(r["subscription_id"], r["version"]): r["status"] for r in rows}
    assert "superseded" in statuses.values()
    # the other incident reached the failing receiver too, once, as an alert
    assert any(other.incident_id.encode() in r.body for r in flaky.received)


async def test_an_older_version_replayed_after_a_newer_one_was_delivered_is_not_sent(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=2))
    rx = await receivers(script=[503, 503])  # v1 dies, then the receiver is back
    async with admin(service) as client:
        await _subscribe(client, url=rx.url)
        v1, v2 = _story(2, cancel_last=False)
        await publish(v1)
        await eventually(lambda: _settled(client, v1.incident_id, 1), what="v1 dead")
        await publish(v2)
        await eventually(lambda: _settled(client, v1.incident_id, 2), what="v2 delivered")
        (dead,) = [r for r in await _rows(client, v1.incident_id) if r["status"] == "dead"]
        response = await client.post(f"/v1/deliveries/{dead['delivery_id']}/replay")
        assert response.status_code == 200, response.text
        await eventually(lambda: _settled(client, v1.incident_id, 2), what="replay decided")
        after = {r["version"]: r for r in await _rows(client, v1.incident_id)}
    # v2 went out as an update (v1 may have reached it: it had attempts), v1 never after it
    assert _json_versions(rx.received) == [(1, "created"), (1, "created"), (2, "updated")]
    assert after[1]["status"] == "superseded"
    assert "version 2 was sent already" in after[1]["last_error"]


def _cap(received: Received) -> ET.Element:
    cap_schema().validate(received.body)  # the official OASIS CAP 1.2 XSD
    return ET.fromstring(received.body)


async def test_cap_identifiers_are_unique_per_message_and_updates_reference_every_earlier_one(
    make_settings, services, receivers, publish
):
    # A takes every version; B only from the version whose probability crosses its minimum,
    # so version 3 is an Alert to B and an Update to A: two messages, two identifiers.
    service = await services(make_settings(sender="shotline.test"))
    rx_a, rx_b = await receivers(), await receivers()
    async with admin(service) as client:
        await _subscribe(client, url=rx_a.url, format="cap")
        await _subscribe(client, url=rx_b.url, format="cap", min_probability=0.8)
        story = _story(4, probability=0.5)
        story[2] = story[2].model_copy(update={"gunfire_probability": 0.95})
        story[3] = story[3].model_copy(update={"gunfire_probability": 0.95})
        for record, rows in zip(story, (1, 2, 4, 6), strict=True):
            await publish(record)
            # one at a time, each acknowledged: nothing collapses, every message goes out
            await eventually(
                lambda n=rows: _settled(client, story[0].incident_id, n), what="acknowledged"
            )

    a = [_cap(r) for r in rx_a.received]
    b = [_cap(r) for r in rx_b.received]
    assert [m.findtext(f"{CAP}msgType") for m in a] == ["Alert", "Update", "Update", "Cancel"]
    assert [m.findtext(f"{CAP}msgType") for m in b] == ["Alert", "Cancel"]
    ids = [m.findtext(f"{CAP}identifier") for m in a + b]
    assert len(set(ids)) == len(ids), ids  # unique per message of the sender
    refs = [f"shotline.test,{m.findtext(f'{CAP}identifier')},{m.findtext(f'{CAP}sent')}" for m in a]
    # every earlier message this subscriber received, not only the last one
    assert a[1].findtext(f"{CAP}references") == refs[0]
    assert a[3].findtext(f"{CAP}references") == " ".join(refs[:3])
    b_ref = f"shotline.test,{b[0].findtext(f'{CAP}identifier')},{b[0].findtext(f'{CAP}sent')}"
    assert b[1].findtext(f"{CAP}references") == b_ref


async def test_a_class_drop_reaches_who_was_alerted_as_a_cancel_in_every_format_and_push(
    make_settings, services, receivers, publish
):
    with running(WebPushReceiver()) as (push_service,):
        settings = make_settings(
            vapid_private_key=generate_vapid_private_key(),
            vapid_subject="mailto:ops@shotline.test",
        )
        service = await services(settings)
        gunfire_only = ["gunfire", "probable_gunfire"]
        rx = {fmt: await receivers() for fmt in ("json", "cap", "eido")}
        wide = await receivers()
        browser = push_service.subscribe()
        async with admin(service) as client:
            for fmt, r in rx.items():
                await _subscribe(client, url=r.url, format=fmt, classes=gunfire_only)
            await _subscribe(client, url=wide.url, classes=["gunfire", "fireworks"])
            response = await client.post(
                "/v1/subscriptions",
                json={
                    "name": "officer",
                    "channel": "push",
                    "geofence": FENCE,
                    "classes": gunfire_only,
                    "push": {"webpush": browser.as_json()},
                },
            )
            assert response.status_code == 201, response.text
            v1 = incident(LAT, LON)
            await publish(v1)
            await eventually(lambda: _settled(client, v1.incident_id, 5), what="alerted")
            before = await _downgrades(client)
            # re-scored: the locator says "updated", now fireworks (it never says cancelled)
            v2 = v1.model_copy(
                update={
                    "version": 2,
                    "event": "updated",
                    "classification": "fireworks",
                    "gunfire_probability": 0.05,
                    "published_at": v1.published_at + timedelta(seconds=5),
                }
            )
            await publish(v2)
            await eventually(lambda: _settled(client, v1.incident_id, 10), what="told")
            await push_service.until(2)
            after = await _downgrades(client)
    # conspicuous for operators too: counted by what each alerted subscriber was told
    assert after["downgraded"] - before.get("downgraded", 0) == 1
    assert after["cancelled"] - before.get("cancelled", 0) == 4

    last_json = orjson.loads(rx["json"].received[-1].body)
    assert (last_json["type"], last_json["data"]["event"]) == ("incident.cancelled", "cancelled")
    cap = _cap(rx["cap"].received[-1])
    assert cap.findtext(f"{CAP}msgType") == "Cancel"
    eido = json.loads(rx["eido"].received[-1].body)
    assert eido["incidentComponent"]["incidentStatusCommonRegistryText"] == ["Cancelled"]
    retraction = push_service.received[-1].json()
    assert retraction["data"]["event"] == "cancelled"
    assert retraction["title"].startswith("CANCELLED")
    # a subscriber that takes fireworks too is told of the downgrade, conspicuously
    down = orjson.loads(wide.received[-1].body)
    assert (down["type"], down["data"]["event"]) == ("incident.downgraded", "downgraded")


async def _downgrades(client) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = (await client.get("/metrics")).text
    return {
        sample.labels["told"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "shotline_dispatch_gunfire_downgrades"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


async def test_a_format_change_never_sends_another_body_under_a_webhook_id_gone_out(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(max_attempts=3))
    rx = await receivers(default=503)
    async with admin(service) as client:
        sub = await _subscribe(client, url=rx.url)
        record = incident(LAT, LON)
        await publish(record)
        await eventually(lambda: _settled(client, record.incident_id, 1), what="dead as JSON")
        response = await client.patch(
            f"/v1/subscriptions/{sub['subscription_id']}", json={"format": "cap"}
        )
        assert response.status_code == 200, response.text
        rx.default = 200
        (dead,) = await _rows(client, record.incident_id)
        response = await client.post(f"/v1/deliveries/{dead['delivery_id']}/replay")
        assert response.status_code == 200, response.text
        await eventually(
            lambda: _delivered_as_cap(rx.received), what="the CAP message under a new id"
        )
        await eventually(lambda: _settled(client, record.incident_id, 2), what="settled")
        rows = await _rows(client, record.incident_id)

    bodies: dict[str, set[bytes]] = defaultdict(set)
    for r in rx.received:
        bodies[r.headers["webhook-id"]].add(r.body)
    assert all(len(b) == 1 for b in bodies.values()), "a webhook-id named two bodies"
    assert len(bodies) == 2  # the JSON message and its CAP successor
    assert sorted(r["status"] for r in rows) == ["delivered", "superseded"]
    assert rx.received[-1].body.startswith(b"<?xml")
    _cap(rx.received[-1])


async def _delivered_as_cap(received: list[Received]) -> bool:
    return bool(received) and received[-1].body.startswith(b"<?xml")


async def test_a_retry_sends_the_stored_body_even_if_the_format_changed_meanwhile_but_not_twice(
    make_settings, services, receivers, publish
):
    # The row is retrying as JSON when the subscription switches to CAP: the JSON
    # webhook-id never carries CAP; the CAP message goes under a webhook-id of its own.
    service = await services(make_settings(max_attempts=40))
    rx = await receivers(default=503)
    async with admin(service) as client:
        sub = await _subscribe(client, url=rx.url)
        record = incident(LAT, LON)
        await publish(record)
        await rx.wait_for(2)
        response = await client.patch(
            f"/v1/subscriptions/{sub['subscription_id']}", json={"format": "cap"}
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.3)
        rx.default = 200
        await eventually(lambda: _settled(client, record.incident_id, 2), what="settled")
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for r in rx.received:
        bodies[r.headers["webhook-id"]].add(r.body)
    assert all(len(b) == 1 for b in bodies.values()), "a webhook-id named two bodies"
    assert rx.received[-1].body.startswith(b"<?xml")


async def test_a_url_the_http_client_cannot_build_is_an_attempt_with_its_error(
    make_settings, services, receivers, publish
):
    # Written straight to the store: the API may refuse such a URL at registration, but
    # rows of a subscription made before must not be re-claimed forever without a trace.
    service = await services(make_settings())
    healthy = await receivers()
    assert service.pool is not None
    bad = await store.create_subscription(
        service.pool,
        name="bad",
        channel="webhook",
        geofence=FENCE,
        classes=["gunfire"],
        min_probability=0.0,
        events=["created", "updated", "cancelled"],
        format="json",
        url="http://\u2460\u2461\u2466.0.0.1/x",
        push=None,
        secret="whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )
    async with admin(service) as client:
        await _subscribe(client, url=healthy.url)
        record = incident(LAT, LON)
        await publish(record)
        await eventually(lambda: _settled(client, record.incident_id, 2), what="both decided")
        (row,) = [
            r
            for r in await _rows(client, record.incident_id)
            if r["subscription_id"] == bad.subscription_id
        ]
        detail = (await client.get(f"/v1/deliveries/{row['delivery_id']}")).json()
    assert detail["status"] == "failed"
    (attempt,) = detail["attempt_log"]
    assert "cannot send to this URL" in attempt["error"]
    assert len(healthy.received) == 1  # the healthy subscriber was not held up


async def test_two_instances_send_one_message_of_a_pair_at_a_time_in_order(
    make_settings, services, receivers, publish
):
    # A slow receiver (50 ms per answer) and two instances claiming concurrently: a
    # subscriber never has two messages of one incident in flight, nor gets them backwards.
    settings = make_settings(claim_batch=8)
    a = await services(settings)
    await services(settings)
    slow = await receivers(delay_s=0.05)
    stories = [_story(4) for _ in range(8)]
    async with admin(a) as client:
        await _subscribe(client, url=slow.url)
        for versions in zip(*stories, strict=True):
            await asyncio.gather(*(publish(r) for r in versions))
        for story in stories:
            await eventually(
                lambda s=story: _settled(client, s[0].incident_id, 4), timeout_s=20, what="sent"
            )
    for story in stories:
        mine = [r for r in slow.received if story[0].incident_id.encode() in r.body]
        told = _json_versions(mine)
        assert [v for v, _ in told] == sorted(v for v, _ in told), told
        assert told[0][1] == "created" and told[-1] == (4, "cancelled"), told
        for before, after in itertools.pairwise(mine):
            assert before.answered_at is not None and after.at >= before.answered_at, (
                "two messages of one incident in flight to one subscriber at once"
            )


class _FailsOnce(httpx.AsyncBaseTransport):
    """An HTTP transport whose first request raises an error no send expects."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.failed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug deep in the HTTP stack")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_unexpected_exception_in_a_send_is_an_attempt_retried_under_the_policy(
    make_settings, receivers, publish, kafka_bootstrap, database_url
):
    http = httpx.AsyncClient(transport=_FailsOnce(), timeout=2.0)
    service = DispatchService(
        make_settings(), bootstrap_servers=kafka_bootstrap, database_url=database_url, http=http
    )
    await service.start()
    try:
        rx = await receivers()
        async with admin(service) as client:
            await _subscribe(client, url=rx.url)
            record = incident(LAT, LON)
            await publish(record)
            await eventually(lambda: _settled(client, record.incident_id, 1), what="delivered")
            (row,) = await _rows(client, record.incident_id)
            detail = (await client.get(f"/v1/deliveries/{row['delivery_id']}")).json()
    finally:
        await service.stop(5.0)
        await http.aclose()
    assert detail["status"] == "delivered"
    first, second = detail["attempt_log"]
    assert first["outcome"] == "retry"
    assert "unexpected RuntimeError: a bug deep in the HTTP stack" in first["error"]
    assert second["outcome"] == "delivered"
    assert len(rx.received) == 1
