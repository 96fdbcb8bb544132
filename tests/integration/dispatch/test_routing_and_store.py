"""Incidents from Kafka reach exactly the subscribers whose geofence contains them, once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import jsonschema
from standardwebhooks import Webhook

from services.dispatch.api import ALERT_SCHEMA_PATH
from shared.schemas import IncidentRecord
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


async def _decided(conn: asyncpg.Connection, incident_id: str, rows: int) -> bool:
    statuses = await conn.fetch(
        "SELECT status FROM dispatch_deliveries WHERE incident_id = $1", incident_id
    )
    return len(statuses) == rows and all(r["status"] != "pending" for r in statuses)


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
        conn = await asyncpg.connect(database_url)
        try:
            # both versions decided (v1 may be collapsed into v2 if v2 came before it went)
            await eventually(
                lambda: _decided(conn, v1.incident_id, 2), what="both versions decided"
            )
            sent = len(receiver.received)
            before = await conn.fetchval(
                "SELECT updated_at FROM dispatch_incidents WHERE incident_id = $1", v1.incident_id
            )
            # the same messages again, and the old version after the new one
            await publish(v1)
            await publish(v2)
            marker = incident()  # published last: once it is stored, the replays were read
            await publish(marker)
            await receiver.wait_for(sent + 1)
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
    assert len(ids) == len(set(ids)) == sent + 1  # the replays sent nothing again


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


#: Where the west zone locates the shot the east zone locates at (40.44, -79.99): 30 m east.
WEST_LON = -79.98965


def _one_shot_two_zones() -> tuple[IncidentRecord, IncidentRecord]:
    """One shot near a zone boundary as the two zones report it: each zone's locator sees
    only its own sensors, so it becomes one incident per zone, with different ids, located
    ~30 m apart."""
    east = incident(lat=40.44, lon=-79.99).model_copy(update={"zone": "east"})
    west = incident(lat=40.44, lon=WEST_LON).model_copy(update={"zone": "west"})
    return east, west


async def test_a_shot_heard_across_a_zone_boundary_alerts_each_subscriber_once(
    make_settings, services, receivers, publish
):
    service = await services(make_settings())
    both, near_west = await receivers(), await receivers()
    east, west = _one_shot_two_zones()
    async with admin(service) as client:
        await _subscribe(client, both.url, square(-79.99, 40.44))
        # a ~35 m square around the west estimate only: the east one falls outside it
        await _subscribe(client, near_west.url, square(WEST_LON, 40.44, 0.0002))

        await publish(east)
        await both.wait_for(1)
        await publish(west)
        await near_west.wait_for(1)  # not alerted to east: it still hears of the shot
        west_v2 = west.model_copy(update={"version": 2, "event": "updated", "rounds": 4})
        await publish(west_v2)
        await near_west.wait_for(2)

        # A minute later at the same place: another shot, alerted again.
        later = west.model_copy(
            update={
                "incident_id": "later-" + west.incident_id,
                "shot_time": west.shot_time + timedelta(seconds=60),
                "last_shot_time": west.last_shot_time + timedelta(seconds=60),
            }
        )
        await publish(later)
        await both.wait_for(2)
        await near_west.wait_for(3)

        east_detail = (await client.get(f"/v1/incidents/{east.incident_id}")).json()
        west_detail = (await client.get(f"/v1/incidents/{west.incident_id}")).json()
        metrics = (await client.get("/metrics")).text
    # one alert per subscriber for the boundary shot, then one for the later shot
    assert [_incident_of(r) for r in both.received] == [east.incident_id, later.incident_id]
    assert [_incident_of(r) for r in near_west.received] == [
        west.incident_id,
        west.incident_id,
        later.incident_id,
    ]
    # oversight counts shots, not incidents, by the links kept both ways
    assert east_detail["same_shot_as"] == [west.incident_id]
    assert west_detail["same_shot_as"] == [east.incident_id]
    assert "shotline_dispatch_same_shot_incidents_total 2.0" in metrics  # west v1 and v2


def _incident_of(request) -> str:  # type: ignore[no-untyped-def]
    return json.loads(request.body)["data"]["incident_id"]


@contextlib.asynccontextmanager
async def _alerted_by_east(  # type: ignore[no-untyped-def]
    make_settings, services, receivers, publish
) -> AsyncIterator[tuple[Any, Any, IncidentRecord, IncidentRecord]]:
    """A subscriber covering both zones, already alerted to the east zone's report of the
    boundary shot: yields (admin client, its receiver, east, west); west is not published."""
    service = await services(make_settings())
    both = await receivers()
    east, west = _one_shot_two_zones()
    async with admin(service) as client:
        await _subscribe(client, both.url, square(-79.99, 40.44))
        await publish(east)
        await both.wait_for(1)
        yield client, both, east, west


async def test_a_cancelled_incident_does_not_hide_another_zones_report_of_the_shot(
    make_settings, services, receivers, publish
):
    async with _alerted_by_east(make_settings, services, receivers, publish) as (
        client, both, east, west
    ):
        # the east zone takes it back (say, reclassified): its subscriber was told "nothing"
        await publish(east.model_copy(update={"version": 2, "event": "cancelled"}))
        await both.wait_for(2)
        await publish(west)  # ... but the west zone still reports gunfire there
        await both.wait_for(3)
        west_detail = (await client.get(f"/v1/incidents/{west.incident_id}")).json()
    assert [_incident_of(r) for r in both.received] == [
        east.incident_id,
        east.incident_id,
        west.incident_id,
    ]
    assert west_detail["same_shot_as"] == []


async def test_when_the_alerted_incident_is_cancelled_the_other_zones_report_is_sent(
    make_settings, services, receivers, publish
):
    async with _alerted_by_east(make_settings, services, receivers, publish) as (
        client, both, east, west
    ):
        await publish(west)  # the same shot: not sent, the subscriber has it from east
        await eventually(
            lambda: _is_stored(client, west.incident_id), what="west stored (and held back)"
        )
        assert len(both.received) == 1
        # east takes it back, but west still reports gunfire there: the subscriber hears both
        await publish(east.model_copy(update={"version": 2, "event": "cancelled"}))
        await both.wait_for(3)
    got = [(json.loads(r.body)["type"], _incident_of(r)) for r in both.received]
    assert got[0] == ("incident.created", east.incident_id)
    assert sorted(got[1:]) == [
        ("incident.cancelled", east.incident_id),
        ("incident.created", west.incident_id),
    ]


async def _is_stored(client, incident_id: str) -> bool:  # type: ignore[no-untyped-def]
    return (await client.get(f"/v1/incidents/{incident_id}")).status_code == 200
