"""Admin API: authentication, validation naming the field, outcomes, incident records."""

from __future__ import annotations

from tests.integration.dispatch.helpers import admin, incident, square

BOWTIE = {  # self-intersecting ring
    "type": "Polygon",
    "coordinates": [[[-80.0, 40.4], [-79.9, 40.5], [-79.9, 40.4], [-80.0, 40.5], [-80.0, 40.4]]],
}


async def test_every_v1_route_needs_the_admin_token_but_probes_do_not(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service, token=None) as anonymous, admin(service, "x" * 32) as wrong:
        for client in (anonymous, wrong):
            for method, path in [
                ("GET", "/v1/subscriptions"),
                ("POST", "/v1/subscriptions"),
                ("GET", "/v1/deliveries"),
                ("GET", "/v1/incidents/x"),
                ("POST", "/v1/deliveries/replay"),
            ]:
                response = await client.request(method, path, json={})
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"] == "Bearer"
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).json()["checks"] == {
            "database": "ok",
            "broker": "ok",
        }
        assert (await anonymous.get("/metrics")).status_code == 200


async def test_a_bad_geofence_is_a_422_naming_the_field_and_the_problem(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    base = {"name": "pd", "channel": "webhook", "url": "http://127.0.0.1:9/hook"}
    cases = [
        (BOWTIE, "Self-intersection"),
        ({"type": "Point", "coordinates": [-80, 40]}, "Polygon or MultiPolygon"),
        (
            square(40.44, -79.99) | {"coordinates": [[[40, -95], [41, -95], [41, -94], [40, -95]]]},
            "out of range",
        ),
    ]
    async with admin(service) as client:
        for fence, problem in cases:
            response = await client.post("/v1/subscriptions", json=base | {"geofence": fence})
            assert response.status_code == 422
            (error,) = response.json()["errors"]
            assert error["field"] == "geofence"
            assert problem in error["reason"]
        missing_url = await client.post(
            "/v1/subscriptions",
            json={"name": "pd", "channel": "webhook", "geofence": square(-79.99, 40.44)},
        )
        assert missing_url.status_code == 422
        assert missing_url.json()["errors"][0]["field"] == "url"


async def test_subscriptions_can_be_listed_updated_and_disabled(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service) as client:
        created = (
            await client.post(
                "/v1/subscriptions",
                json={
                    "name": "zone 5",
                    "channel": "webhook",
                    "url": "https://cad.example/hook",
                    "geofence": square(-79.99, 40.44),
                    "format": "cap",
                },
            )
        ).json()
        sid = created["subscription_id"]
        patched = await client.patch(
            f"/v1/subscriptions/{sid}", json={"min_probability": 0.8, "events": ["created"]}
        )
        assert patched.json()["min_probability"] == 0.8
        assert patched.json()["events"] == ["created"]
        disabled = await client.post(f"/v1/subscriptions/{sid}/disable")
        assert disabled.json()["status"] == "disabled"
        listed = (await client.get("/v1/subscriptions", params={"status": "disabled"})).json()
        assert [s["subscription_id"] for s in listed] == [sid]
        assert (await client.get("/v1/subscriptions/sub_nope")).status_code == 404
        push = await client.post(
            "/v1/subscriptions",
            json={
                "name": "officer",
                "channel": "push",
                "geofence": square(-79.99, 40.44),
                "push": {"fcm": {"token": "token-123456789"}},
            },
        )
        assert push.status_code == 201
        assert "secret" not in push.json()


async def test_outcomes_are_stored_as_versions_and_returned_as_history(
    make_settings, services, publish
):
    from tests.integration.dispatch.helpers import eventually

    service = await services(make_settings(workers=False))
    record = incident()
    await publish(record)
    async with admin(service) as client:

        async def stored() -> bool:
            return (await client.get(f"/v1/incidents/{record.incident_id}")).status_code == 200

        await eventually(stored, what="incident stored")
        url = f"/v1/incidents/{record.incident_id}/outcome"
        first = await client.post(
            url, json={"units_dispatched": 2, "evidence": ["none"], "call_911": False}
        )
        second = await client.post(
            url,
            json={
                "units_dispatched": 3,
                "arrival_time": "2026-11-25T01:02:03.000000Z",
                "evidence": ["casings", "witness"],
                "call_911": True,
                "disposition": "casings recovered at 5th & Smithfield",
            },
        )
        assert (first.status_code, second.status_code) == (201, 201)
        history = (await client.get(url)).json()
        assert [h["outcome_version"] for h in history] == [1, 2]
        assert history[1]["evidence"] == ["casings", "witness"]
        assert history[0]["units_dispatched"] == 2
        bad = await client.post(
            url, json={"units_dispatched": 1, "evidence": ["dog"], "call_911": False}
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("evidence")
        unknown = await client.post(
            "/v1/incidents/nope/outcome",
            json={"units_dispatched": 1, "evidence": ["none"], "call_911": False},
        )
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        incidents = (await client.get("/v1/incidents")).json()
        assert [i["incident_id"] for i in incidents] == [record.incident_id]
        doc = (await client.get(f"{service.url}/openapi.json")).json()
        body = doc["webhooks"]["incident-alert"]["post"]["requestBody"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/IncidentAlert"
        assert "data" in doc["components"]["schemas"]["IncidentAlert"]["properties"]


async def test_readyz_notices_a_frozen_broker(make_settings, database_url):
    import os
    import signal

    from services.dispatch.main import DispatchService
    from shared.embedded import EmbeddedKafka

    broker = EmbeddedKafka().start()
    settings = make_settings(
        consume=False, workers=False, kafka_bootstrap_servers=broker.bootstrap_servers
    )
    service = DispatchService(
        settings, bootstrap_servers=broker.bootstrap_servers, database_url=database_url
    )
    try:
        await service.start()
        async with admin(service, token=None) as anonymous:
            assert (await anonymous.get("/readyz")).status_code == 200
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)  # still accepts TCP connections
            try:
                frozen = await anonymous.get("/readyz")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert frozen.status_code == 503
            assert frozen.json()["checks"] == {"database": "ok", "broker": "unreachable"}
    finally:
        await service.stop(5)
        broker.stop()
