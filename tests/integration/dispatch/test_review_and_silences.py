"""Review and silences through the real service: what each subscriber is told, when."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from tests.integration.dispatch.helpers import admin, eventually, incident, square

AREA = square(-79.99, 40.44)


async def _subscribe(client, url: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/subscriptions",
        json={"name": "pd", "channel": "webhook", "url": url, "geofence": AREA, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _metric(client, sample: str) -> float:  # type: ignore[no-untyped-def]
    """The value of one sample line of /metrics (0 when absent)."""
    for line in (await client.get("/metrics")).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def _alerts(got) -> list[dict]:  # type: ignore[no-untyped-def]
    """The JSON alerts a receiver (or the list its ``wait_for`` returned) got, in order."""
    received = got if isinstance(got, list) else got.received
    return [json.loads(r.body)["data"] for r in received]


async def test_required_review_waits_for_the_reviewer_and_none_hears_at_once(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(review_deadline_s=60))
    machine, reviewed = await receivers(), await receivers()
    async with admin(service) as client:
        await _subscribe(client, machine.url)
        await _subscribe(client, reviewed.url, review="required")
        record = incident()
        await publish(record)
        await machine.wait_for(1)
        queue = (await client.get("/v1/reviews")).json()
        assert [q["incident_id"] for q in queue] == [record.incident_id]
        await asyncio.sleep(0.5)
        assert reviewed.received == []  # nothing before a decision
        confirmed = 'shotline_dispatch_review_decision_seconds_count{decision="confirm"}'
        before = await _metric(client, confirmed)
        response = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "confirm", "reviewed_by": "ana", "reason": "three shots heard"},
        )
        assert response.status_code == 201, response.text
        (alert,) = _alerts(await reviewed.wait_for(1))
        assert (alert["event"], alert["version"]) == ("created", 2)
        assert alert["review"]["status"] == "confirmed"
        assert alert["review"]["reviewed_by"] == "ana"
        assert alert["review"]["reason"] == "three shots heard"
        assert not alert["review"]["late"]
        await machine.wait_for(2)
        assert [a["event"] for a in _alerts(machine)] == ["created", "updated"]
        assert (await client.get("/v1/reviews")).json() == []
        again = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "reject", "reviewed_by": "bo", "reason": "second opinion"},
        )
        assert again.status_code == 201  # a later decision is a later version
        await machine.wait_for(3)
        await reviewed.wait_for(2)
        assert _alerts(machine)[-1]["event"] == "cancelled"
        assert _alerts(reviewed)[-1]["event"] == "cancelled"
        # a decision on a cancelled incident is refused
        late = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "confirm", "reviewed_by": "cy", "reason": "x"},
        )
        assert late.status_code == 409, late.text
        assert await _metric(client, confirmed) == before + 1


async def test_a_passed_deadline_delivers_unreviewed_and_a_late_decision_is_marked_late(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(review_deadline_s=1.0, sweep_interval_s=0.1))
    machine, reviewed = await receivers(), await receivers()
    async with admin(service) as client:
        await _subscribe(client, machine.url)
        await _subscribe(client, reviewed.url, review="required")
        record = incident()
        await publish(record)
        late_before = await _metric(client, "shotline_dispatch_review_late_total")
        unreviewed_before = await _metric(client, "shotline_dispatch_review_unreviewed_total")
        await machine.wait_for(1)
        await asyncio.sleep(0.5)
        assert reviewed.received == []
        (alert,) = _alerts(await reviewed.wait_for(1, timeout_s=5))
        assert alert["review"]["status"] == "unreviewed"  # fail open
        assert alert["event"] == "created"
        await asyncio.sleep(0.3)
        assert len(machine.received) == 1  # the marker is no news to a non-reviewing CAD
        response = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "reject", "reviewed_by": "ana", "reason": "a car backfiring"},
        )
        assert response.status_code == 201, response.text
        assert response.json()["review"]["late"] is True
        assert _alerts(await reviewed.wait_for(2))[-1]["event"] == "cancelled"
        assert _alerts(await machine.wait_for(2))[-1]["event"] == "cancelled"
        assert await _metric(client, "shotline_dispatch_review_late_total") == late_before + 1
        assert (
            await _metric(client, "shotline_dispatch_review_unreviewed_total")
            == unreviewed_before + 1
        )


async def test_a_rejection_before_anyone_was_told_sends_the_reviewing_cad_nothing(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(review_deadline_s=60))
    reviewed = await receivers()
    async with admin(service) as client:
        await _subscribe(client, reviewed.url, review="required")
        record = incident()
        await publish(record)
        await eventually(
            lambda: _queued(client, record.incident_id), what="the incident in the queue"
        )
        response = await client.post(
            f"/v1/reviews/{record.incident_id}",
            json={"decision": "reject", "reviewed_by": "ana", "reason": "construction site"},
        )
        assert response.status_code == 201
        await asyncio.sleep(1.0)
        assert reviewed.received == []


async def _queued(client, incident_id: str) -> bool:  # type: ignore[no-untyped-def]
    return incident_id in {q["incident_id"] for q in (await client.get("/v1/reviews")).json()}


async def test_a_silence_holds_delivery_until_expired_but_never_high_gunfire(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(silence_gunfire_floor=0.9, sweep_interval_s=0.1))
    cad = await receivers()
    async with admin(service) as client:
        await _subscribe(client, cad.url, classes=["gunfire", "fireworks"], min_probability=0.0)
        ends = datetime.now(UTC) + timedelta(hours=3)
        created = await client.post(
            "/v1/silences",
            json={
                "area": AREA,
                "ends_at": ends.isoformat(),
                "author": "sgt. ortiz",
                "reason": "4th of July show at the stadium",
            },
        )
        assert created.status_code == 201, created.text
        silence = created.json()
        show = incident(classification="fireworks", probability=0.1)
        weak = incident(probability=0.5)  # low-probability gunfire: silenced too
        shooting = incident(probability=0.97)  # above the floor: never silenced implicitly
        for record in (show, weak, shooting):
            await publish(record)
        (alert,) = _alerts(await cad.wait_for(1))
        assert alert["incident_id"] == shooting.incident_id
        await asyncio.sleep(0.5)
        assert len(cad.received) == 1
        # still stored and listed (only delivery is held)
        listed = {i["incident_id"] for i in (await client.get("/v1/incidents")).json()}
        assert {show.incident_id, weak.incident_id} <= listed
        changed = await client.patch(
            f"/v1/silences/{silence['silence_id']}",
            json={
                "ends_at": (ends + timedelta(hours=1)).isoformat(),
                "author": "sgt. ortiz",
                "reason": "encore announced",
            },
        )
        assert changed.status_code == 200, changed.text
        backwards = await client.patch(
            f"/v1/silences/{silence['silence_id']}",
            json={"ends_at": "2000-01-01T00:00:00Z", "author": "x", "reason": "typo"},
        )
        assert backwards.status_code == 422
        assert "ends_at" in backwards.text
        bad = await client.post(
            f"/v1/silences/{silence['silence_id']}/expire", json={"author": "sgt. ortiz"}
        )
        assert bad.status_code == 422  # who *and* why
        expired = await client.post(
            f"/v1/silences/{silence['silence_id']}/expire",
            json={"author": "lt. chen", "reason": "show over early"},
        )
        assert expired.status_code == 200, expired.text
        await cad.wait_for(3, timeout_s=5)
        assert {a["incident_id"] for a in _alerts(cad)[1:]} == {show.incident_id, weak.incident_id}
        detail = (await client.get(f"/v1/silences/{silence['silence_id']}")).json()
        assert [(h["action"], h["actor"], h["reason"]) for h in detail["history"]] == [
            ("created", "sgt. ortiz", "4th of July show at the stadium"),
            ("changed", "sgt. ortiz", "encore announced"),
            ("expired", "lt. chen", "show over early"),
        ]
        assert {h["outcome"] for h in detail["held_incidents"]} == {"delivered"}


async def test_the_console_feed_streams_new_versions_and_catches_up_from_last_event_id(
    make_settings, services, publish
):
    service = await services(make_settings())
    first, second = incident(), incident()
    async with admin(service) as client:
        await publish(first)
        seen: list[dict] = []

        async def read(after: int | None, stop_at: str) -> None:
            headers = {} if after is None else {"last-event-id": str(after)}
            async with client.stream("GET", "/v1/console/feed", headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                event: dict = {}
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        event["id"] = int(line[4:])
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif line == "" and "data" in event:
                        seen.append(event)
                        if event["data"]["incident"]["incident_id"] == stop_at:
                            return
                        event = {}

        await asyncio.wait_for(read(None, first.incident_id), 5)
        last = seen[-1]["id"]
        await publish(second)
        seen.clear()
        await asyncio.wait_for(read(last, second.incident_id), 5)
        assert [e["data"]["incident"]["incident_id"] for e in seen] == [second.incident_id]
        unauthenticated = await client.get("/v1/console/feed", headers={"authorization": ""})
        assert unauthenticated.status_code == 401


async def test_the_locators_next_version_after_a_decision_is_stored_after_it_not_dropped(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(review_deadline_s=60))
    cad = await receivers()
    async with admin(service) as client:
        await _subscribe(client, cad.url, review="required")
        first = incident()
        await publish(first)
        await eventually(lambda: _queued(client, first.incident_id), what="queued")
        decided = await client.post(
            f"/v1/reviews/{first.incident_id}",
            json={"decision": "confirm", "reviewed_by": "ana", "reason": "clear"},
        )
        assert decided.json()["version"] == 2
        await cad.wait_for(1)
        # the locator, unaware of the decision, sends its own version 2: a fourth round
        more = first.model_copy(update={"version": 2, "event": "updated", "rounds": 4})
        await publish(more)
        got = _alerts(await cad.wait_for(2))
        assert (got[1]["version"], got[1]["event"], got[1]["rounds"]) == (3, "updated", 4)
        assert got[1]["review"]["status"] == "confirmed"  # the decision stands
        versions = (await client.get(f"/v1/incidents/{first.incident_id}")).json()["versions"]
        assert [v["version"] for v in versions] == [1, 2, 3]


async def test_the_sensor_page_shows_last_seen_rejections_and_the_locators_clock_health(
    make_settings, services, publish, database_url
):
    import asyncpg
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from services.ingest.registry import add_sensor
    from shared.schemas import Position

    registry = CollectorRegistry()
    residual = Gauge(
        "shotline_locator_sensor_median_residual_seconds", "", ["zone", "sensor_id"],
        registry=registry,
    )  # fmt: skip
    flagged = Gauge("shotline_locator_sensor_flagged", "", ["zone", "sensor_id"], registry=registry)
    residual.labels("z1", "s2").set(0.004)
    flagged.labels("z1", "s2").set(1)
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def metrics(_request):  # type: ignore[no-untyped-def]
        return Response(generate_latest(registry), media_type="text/plain")

    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/metrics", metrics)]), host="127.0.0.1", port=0,
            log_config=None, lifespan="off",
        )
    )  # fmt: skip
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        await eventually(_started(server), timeout_s=5, what="the locator's /metrics")
        port = server.servers[0].sockets[0].getsockname()[1]
        service = await services(
            make_settings(console_locator_metrics_url=f"http://127.0.0.1:{port}/metrics")
        )
        conn = await asyncpg.connect(database_url)
        try:
            for sid, lon in (("s1", -79.99), ("s2", -79.98)):
                await add_sensor(conn, sid, "z1", Position(lat=40.44, lon=lon))
            await conn.execute("UPDATE sensors SET last_seen_at = now() WHERE sensor_id = 's1'")
        finally:
            await conn.close()
        # s2's pulse was rejected by the solver in one incident of two
        one = incident()
        two = incident().model_copy(update={"sensors_used": ["s1"], "sensors_rejected": ["s2"]})
        for record in (one, two):
            await publish(record)
        async with admin(service) as client:
            await eventually(
                lambda: _listed(client, {one.incident_id, two.incident_id}), what="stored"
            )
            rows = {r["sensor_id"]: r for r in (await client.get("/v1/console/sensors")).json()}
    finally:
        server.should_exit = True
        await task
    assert rows["s1"]["last_seen_at"] is not None and rows["s2"]["last_seen_at"] is None
    assert (rows["s1"]["used"], rows["s1"]["rejected"], rows["s1"]["rejected_share"]) == (2, 0, 0)
    assert (rows["s2"]["used"], rows["s2"]["rejected"], rows["s2"]["rejected_share"]) == (1, 1, 0.5)
    assert (rows["s2"]["median_residual_s"], rows["s2"]["flagged"]) == (0.004, 1)
    assert rows["s1"]["median_residual_s"] is None


async def _listed(client, ids: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return ids <= {i["incident_id"] for i in (await client.get("/v1/incidents")).json()}


def _started(server):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(server.started)

    return check
