"""Alerts go only to allowed addresses: a private or loopback target is refused when it is
registered and, if it got in anyway, when an alert would be sent (no SSRF)."""

from __future__ import annotations

from tests.integration.dispatch.helpers import admin, eventually, incident, square


def _webhook(url: str) -> dict:
    return {"name": "cad", "channel": "webhook", "url": url, "geofence": square(-79.99, 40.44)}


async def test_registering_a_loopback_or_metadata_url_is_a_422_naming_the_field(
    make_settings, services
):
    service = await services(make_settings(allowed_target_networks=[], consume=False))
    async with admin(service) as client:
        for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://169.254.169.254/"):
            response = await client.post("/v1/subscriptions", json=_webhook(url))
            assert response.status_code == 422, (url, response.text)
            (error,) = response.json()["errors"]
            assert error["field"] == "url"
            assert "SHOTLINE_DISPATCH_ALLOWED_TARGET_NETWORKS" in error["reason"]
        assert (await client.get("/v1/subscriptions")).json() == []


async def test_an_alert_to_an_address_no_longer_allowed_fails_at_once_and_sends_nothing(
    make_settings, services, receivers, publish
):
    # Registered while loopback was allowed (an API-only instance, the test default) ...
    registrar = await services(make_settings(consume=False, workers=False))
    cad = await receivers()
    async with admin(registrar) as client:
        created = await client.post("/v1/subscriptions", json=_webhook(cad.url))
        assert created.status_code == 201, created.text
    # ... then the operator narrowed the allowed networks: the instance that sends refuses it.
    service = await services(make_settings(allowed_target_networks=[], max_attempts=5))
    record = incident()
    await publish(record)

    query = {"incident_id": record.incident_id}

    async def failed() -> bool:
        rows = (await client.get("/v1/deliveries", params=query)).json()
        return bool(rows) and rows[0]["status"] == "failed"

    async with admin(service) as client:
        await eventually(failed, what="the delivery failed")
        (row,) = (await client.get("/v1/deliveries", params=query)).json()
        detail = (await client.get(f"/v1/deliveries/{row['delivery_id']}")).json()
    assert "target refused" in detail["last_error"] and "loopback" in detail["last_error"]
    assert detail["attempts"] == 1  # not retried: retrying cannot change the address
    assert cad.received == []
