"""Each subscriber gets the format it asked for; officers' phones get decryptable pushes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import orjson
from standardwebhooks import Webhook

from services.dispatch.push.webpush import generate_vapid_private_key
from tests.integration.dispatch.helpers import admin, eventually, incident, square
from tests.support.push_receivers import FcmReceiver, WebPushReceiver, running

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
FENCE = square(-79.99, 40.44)


def _signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Check the signature as a receiver of a non-JSON body would (verify() parses JSON)."""
    from datetime import UTC, datetime

    ts = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], ts, body.decode())
    return expected in headers["webhook-signature"].split(" ")


async def test_cap_and_eido_subscribers_receive_their_format(
    make_settings, services, receivers, publish
):
    service = await services(make_settings(sender="shotline.test"))
    cap_rx, eido_rx = await receivers(), await receivers()
    async with admin(service) as client:
        subs = {}
        for fmt, rx in (("cap", cap_rx), ("eido", eido_rx)):
            response = await client.post(
                "/v1/subscriptions",
                json={
                    "name": fmt,
                    "channel": "webhook",
                    "url": rx.url,
                    "geofence": FENCE,
                    "format": fmt,
                },
            )
            subs[fmt] = response.json()
        record = incident()
        await publish(record)
        (cap,) = await cap_rx.wait_for(1)
        (eido,) = await eido_rx.wait_for(1)

    assert cap.headers["content-type"] == "application/common-alerting-protocol+xml"
    root = ET.fromstring(cap.body)
    assert root.tag == f"{CAP}alert"
    assert root.findtext(f"{CAP}sender") == "shotline.test"
    assert root.findtext(f"{CAP}msgType") == "Alert"
    assert record.incident_id in cap.body.decode()
    assert _signed_by(subs["cap"]["secret"], cap.headers, cap.body)

    assert eido.headers["content-type"].startswith("application/json")
    doc = json.loads(eido.body)
    assert doc["eidoVersion"] == "1.0"
    assert doc["issuingElementIdentification"] == "shotline.test"
    assert doc["incidentComponent"]["internalIncidentId"] == record.incident_id
    assert _signed_by(subs["eido"]["secret"], eido.headers, eido.body)


async def test_officer_push_reaches_web_push_and_fcm_and_decrypts(make_settings, services, publish):
    with running(WebPushReceiver(), FcmReceiver()) as (push_service, fcm_service):
        settings = make_settings(
            vapid_private_key=generate_vapid_private_key(),
            vapid_subject="mailto:ops@shotline.test",
            fcm_service_account=orjson.dumps(fcm_service.service_account()).decode(),
            fcm_base_url=fcm_service.base_url,
        )
        service = await services(settings)
        browser = push_service.subscribe()
        phone = fcm_service.register_device()
        async with admin(service) as client:
            for target in ({"webpush": browser.as_json()}, {"fcm": {"token": phone.token}}):
                response = await client.post(
                    "/v1/subscriptions",
                    json={"name": "officer", "channel": "push", "geofence": FENCE, "push": target},
                )
                assert response.status_code == 201, response.text
            record = incident()
            await publish(record)
            await push_service.until(1)
            await fcm_service.until(1)

            async def both_delivered() -> bool:
                rows = (
                    await client.get("/v1/deliveries", params={"incident_id": record.incident_id})
                ).json()
                return len(rows) == 2 and {r["status"] for r in rows} == {"delivered"}

            await eventually(both_delivered, what="both pushes recorded delivered")

            # the browser unsubscribed: the push service says 410, the subscription is off
            push_service.unsubscribe(browser)
            await publish(incident())

            async def disabled() -> bool:
                subs = (await client.get("/v1/subscriptions", params={"status": "disabled"})).json()
                return len(subs) == 1

            await eventually(disabled, what="web push subscription disabled after 410")

    (push,) = push_service.received
    payload = push.json()  # decrypted by the push receiver with the browser's keys
    assert payload["data"]["incident_id"] == record.incident_id
    assert payload["data"]["event"] == "created"
    assert push.claims["sub"] == "mailto:ops@shotline.test"
    message = fcm_service.received[0].message
    assert message["token"] == phone.token
    assert message["data"]["incident_id"] == record.incident_id
    assert message["android"]["priority"] == "high"
