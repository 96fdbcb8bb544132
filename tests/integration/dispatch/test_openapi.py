"""Dispatch's OpenAPI document says what the API answers and what webhooks send: valid,
every reference resolving, real answers and captured webhook bodies matching it."""

from __future__ import annotations

import json

import orjson
import pytest

from tests.integration.dispatch.helpers import admin, incident, square
from tests.support.openapi import check_document, check_response, validator_at

FENCE = square(-79.99, 40.44)
WEBPUSH = {
    "endpoint": "https://push.example.net/wpush/abc",
    "keys": {"p256dh": "B" * 87, "auth": "secret-auth-0123"},
}


async def test_the_document_is_valid_and_real_answers_match_it(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service) as client, admin(service, token=None) as anonymous:
        doc = (await client.get("/openapi.json")).json()
        assert check_document(doc) > 0
        assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
        assert doc["paths"]["/v1/subscriptions"]["get"]["security"] == [{"adminToken": []}]
        assert "HTTPValidationError" not in doc["components"]["schemas"]  # not FastAPI's shape
        docs_page = (await anonymous.get("/docs")).text
        assert "/static-offline-docs/swagger-ui-bundle.js" in docs_page  # no CDN
        assert (await anonymous.get("/static-offline-docs/redoc.standalone.js")).status_code == 200

        hook = {"name": "cad", "channel": "webhook", "url": "https://cad.example.org/x"}
        created = await client.post("/v1/subscriptions", json=hook | {"geofence": FENCE})
        assert created.status_code == 201
        sub = created.json()["subscription_id"]
        answers = [
            ("/v1/subscriptions", "post", created),
            ("/v1/subscriptions", "get", await client.get("/v1/subscriptions")),
            (
                "/v1/subscriptions",
                "post",
                await client.post("/v1/subscriptions", json=hook | {"geofence": {"type": "x"}}),
            ),
            ("/v1/subscriptions", "get", await anonymous.get("/v1/subscriptions")),
            (
                "/v1/subscriptions",
                "post",
                await client.post(
                    "/v1/subscriptions",
                    content=b"name=x",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                ),
            ),
            (
                "/v1/subscriptions/{subscription_id}",
                "get",
                await client.get("/v1/subscriptions/sub_none"),
            ),
            (
                "/v1/subscriptions/{subscription_id}",
                "patch",
                await client.patch(f"/v1/subscriptions/{sub}", json={"name": None}),
            ),
            ("/v1/deliveries/{delivery_id}", "get", await client.get(f"/v1/deliveries/{2**63}")),
            ("/v1/incidents/{incident_id}", "get", await client.get("/v1/incidents/nope")),
        ]
        statuses = []
        for path, method, answer in answers:
            check_response(doc, path, method, answer.status_code, answer.json())
            statuses.append(answer.status_code)
        assert statuses == [201, 200, 422, 401, 415, 404, 422, 422, 404]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # an explicit null is no way to empty a field: 422, not a database error
        ({"name": None}, "name"),
        ({"geofence": None}, "geofence"),
        ({"classes": None}, "classes"),
        ({"status": None}, "status"),
        # control characters cannot be stored (PostgreSQL refuses NUL)
        ({"name": "pd\x00east"}, "name"),
        ({"name": "pd\x1beast"}, "name"),
        ({"geofence": FENCE | {"note\x00": 1}}, "geofence"),
        # a URL the HTTP client cannot build could never be sent
        ({"url": "http://①②⑦.0.0.1/x"}, "url"),
    ],
)
async def test_patch_refuses_what_cannot_be_stored_or_sent_naming_the_field(
    make_settings, services, change, field
):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service) as client:
        body = {"name": "cad", "channel": "webhook", "url": "https://cad.example.org/x"}
        sub = (await client.post("/v1/subscriptions", json=body | {"geofence": FENCE})).json()
        answer = await client.patch(f"/v1/subscriptions/{sub['subscription_id']}", json=change)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == field


async def test_inputs_beyond_what_the_database_holds_are_422(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service) as client:
        for path in (
            f"/v1/deliveries/{2**63}",
            f"/v1/deliveries?after_id={2**64}",
            "/v1/deliveries?subscription_id=a%00b",
            "/v1/subscriptions/sub%00x",
            "/v1/incidents?before=9999-12-31T23:59:59-01:00",
            "/v1/incidents?before=0001-01-01T00:00:00%2B01:00",
            "/v1/incidents?zone=%00",
        ):
            answer = await client.get(path)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["errors"], path
        bad = await client.post(
            "/v1/subscriptions",
            json={
                "name": "x",
                "channel": "webhook",
                "url": "http://①②⑦.0.0.1/x",
                "geofence": FENCE,
            },
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "url"


async def test_push_secrets_are_write_only(make_settings, services):
    service = await services(make_settings(consume=False, workers=False))
    async with admin(service) as client:
        base = {"name": "officer", "channel": "push", "geofence": FENCE}
        web = await client.post("/v1/subscriptions", json=base | {"push": {"webpush": WEBPUSH}})
        fcm = await client.post(
            "/v1/subscriptions", json=base | {"push": {"fcm": {"token": "fcm-registration-xyz"}}}
        )
        assert web.status_code == fcm.status_code == 201
        listed = (await client.get("/v1/subscriptions")).text
        one = (await client.get(f"/v1/subscriptions/{web.json()['subscription_id']}")).json()
        for text in (listed, web.text, fcm.text, json.dumps(one)):
            assert "secret-auth-0123" not in text and "fcm-registration-xyz" not in text
        assert one["push"]["webpush"]["keys"] == {"p256dh": "B" * 87, "auth": "********"}
        assert one["push"]["webpush"]["endpoint"] == WEBPUSH["endpoint"]


async def test_every_webhook_body_sent_matches_the_document(
    make_settings, services, receivers, publish, shared_kit
):
    import xmlschema

    service = await services(make_settings(sender="shotline.test"))
    rx = {fmt: await receivers() for fmt in ("json", "cap", "eido")}
    async with admin(service) as client:
        doc = (await client.get("/openapi.json")).json()
        for fmt, receiver in rx.items():
            response = await client.post(
                "/v1/subscriptions",
                json={
                    "name": fmt,
                    "channel": "webhook",
                    "url": receiver.url,
                    "geofence": FENCE,
                    "format": fmt,
                },
            )
            assert response.status_code == 201
        record = incident()
        await publish(record)
        # Each subscriber's v1 is acknowledged before v2 exists: a pending v1 would otherwise
        # be collapsed into v2 (one message per incident in flight), leaving one body to check.
        for receiver in rx.values():
            await receiver.wait_for(1)
        await publish(record.model_copy(update={"version": 2, "event": "updated", "rounds": 4}))
        captured = {fmt: await receiver.wait_for(2) for fmt, receiver in rx.items()}

    hooks = {"json": "incident-alert", "cap": "incident-alert-cap", "eido": "incident-alert-eido"}
    xsd = xmlschema.XMLSchema(str(shared_kit / "standards" / "cap-1.2" / "CAP-v1.2.xsd"))
    for fmt, bodies in captured.items():
        post = doc["webhooks"][hooks[fmt]]["post"]
        (media_type,) = post["requestBody"]["content"]
        header_schemas = {p["name"]: p for p in post["parameters"]}
        for received in bodies:
            assert received.headers["content-type"].split(";")[0] == media_type
            for name, parameter in header_schemas.items():
                validator_at({"p": parameter["schema"], "openapi": "3.1.0"}, "p").validate(
                    received.headers[name]
                )
            if media_type == "application/json":
                validator_at(
                    doc,
                    "webhooks",
                    hooks[fmt],
                    "post",
                    "requestBody",
                    "content",
                    media_type,
                    "schema",
                ).validate(orjson.loads(received.body))
            else:
                assert (
                    "CAP-v1.2.xsd"
                    in post["requestBody"]["content"][media_type]["schema"]["externalDocs"]["url"]
                )
                xsd.validate(received.body.decode())
