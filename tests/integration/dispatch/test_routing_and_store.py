"""Incidents from Kafka reach exactly the subscribers whose geofence contains them, once."""

from __future__ import annotations

import json

import asyncpg
import jsonschema
from standardwebhooks import Webhook

from services.dispatch.api import ALERT_SCHEMA_PATH
from tests.integration.dispatch.helpers import admin, eventually, incident, square


async def _subscribe(client, url: str, fence: dict, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/subscriptions",
        json={"name": "pd", "channel": "webhook", "url": url, "geofence": fence, **extra},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_located_incident_reaches_exactly_the_subscribers_whose_geofence_contains_it(
    make_settings, services, receivers, publish
):
    service = await services(make_settings())
    inside_a, inside_b, outside = await receivers(), await receivers(), await receivers()
    async with admin(service) as client:
        sub_a = await _subscribe(client, inside_a.url, square(-79.99, 40.44))
        await _subscribe(client, inside_b.url, square(-79.995, 40.445, 0.02))
        await _subscribe(client, outside.url, square(-80.2, 40.6))  # 25 km away

        record = incident(lat=40.44, lon=-79.99)
        await publish(record)
        (got_a,) = await inside_a.wait_for(1)
        await inside_b.wait_for(1)

        # a real receiver verifies the Standard Webhooks signature with its secret
        payload = Webhook(sub_a["secret"]).verify(got_a.body, got_a.headers)
        jsonschema.validate(payload, json.loads(ALERT_SCHEMA_PATH.read_text()))
        assert payload["type"] == "incident.created"
        assert payload["data"]["incident_id"] == record.incident_id
        assert got_a.headers["content-type"].startswith("application/json")

        # the dispatch centre can prove what it received: version + one delivery each
        detail = (await client.get(f"/v1/incidents/{record.incident_id}")).json()
        assert [v["version"] for v in detail["versions"]] == [1]
        await eventually(
            lambda: _all_delivered(client, record.incident_id, 2), what="2 delivered rows"
        )
    assert outside.received == []


async def _all_delivered(client, incident_id: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    rows = (await client.get("/v1/deliveries", params={"incident_id": incident_id})).json()
    return len(rows) == n and all(r["status"] == "delivered" for r in rows)


async def test_a_replayed_kafka_message_changes_nothing(
    make_settings, services, receivers, publish, database_url
):
    service = await services(make_settings())
    receiver = await receivers()
    async with admin(service) as client:
        await _subscribe(client, receiver.url, square(-79.99, 40.44))
        v1 = incident()
        v2 = incident(incident_id=v1.incident_id, version=2, event="updated", probability=0.97)
        await publish(v1)
        await publish(v2)
        await receiver.wait_for(2)
        conn = await asyncpg.connect(database_url)
        try:
            before = await conn.fetchval(
                "SELECT updated_at FROM dispatch_incidents WHERE incident_id = $1", v1.incident_id
            )
            # the same messages again, and the old version after the new one
            await publish(v1)
            await publish(v2)
            marker = incident()  # published last: once it is stored, the replays were read
            await publish(marker)
            await receiver.wait_for(3)
            await eventually(
                lambda: _stored(conn, marker.incident_id), what="marker incident stored"
            )
            current = await conn.fetchrow(
                "SELECT version, updated_at FROM dispatch_incidents WHERE incident_id = $1",
                v1.incident_id,
            )
            assert current["version"] == 2
            assert current["updated_at"] == before
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM dispatch_deliveries WHERE incident_id = $1",
                    v1.incident_id,
                )
                == 2
            )
        finally:
            await conn.close()
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(ids) == len(set(ids)) == 3


async def _stored(conn: asyncpg.Connection, incident_id: str) -> bool:
    return bool(
        await conn.fetchval("SELECT 1 FROM dispatch_incidents WHERE incident_id = $1", incident_id)
    )


async def test_an_older_version_arriving_late_does_not_regress_the_incident_nor_alert(
    make_settings, services, receivers, publish, database_url
):
    service = await services(make_settings())
    receiver = await receivers()
    async with admin(service) as client:
        await _subscribe(client, receiver.url, square(-79.99, 40.44))
        v2 = incident(version=2, event="updated")
        v1 = incident(incident_id=v2.incident_id, version=1, probability=0.6)
        await publish(v2)
        await receiver.wait_for(1)
        await publish(v1)
        marker = incident()
        await publish(marker)
        await receiver.wait_for(2)
        detail = (await client.get(f"/v1/incidents/{v2.incident_id}")).json()
    assert detail["version"] == 2
    assert detail["record"]["gunfire_probability"] == v2.gunfire_probability
    assert [v["version"] for v in detail["versions"]] == [1, 2]  # history keeps both
    assert [d["version"] for d in detail["deliveries"]] == [2]  # nobody got the stale one


async def test_an_update_tells_its_subscriber_which_version_it_replaces(
    make_settings, services, receivers, publish
):
    service = await services(make_settings())
    receiver, newcomer = await receivers(), await receivers()
    async with admin(service) as client:
        await _subscribe(client, receiver.url, square(-79.99, 40.44))
        v1 = incident()
        await publish(v1)
        await receiver.wait_for(1)
        await _subscribe(client, newcomer.url, square(-79.99, 40.44))  # joins after v1
        await publish(incident(incident_id=v1.incident_id, version=2, event="updated"))
        first, second = await receiver.wait_for(2)
        (news,) = await newcomer.wait_for(1)
    # for the newcomer this is the first word of the incident: "created", nothing replaced
    assert json.loads(news.body)["type"] == "incident.created"
    assert json.loads(news.body)["data"]["previous_version"] is None
    update = json.loads(second.body)
    assert json.loads(first.body)["type"] == "incident.created"
    assert update["type"] == "incident.updated"
    assert update["data"]["version"] == 2
    assert update["data"]["previous_version"] == 1  # what this subscriber got before
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
