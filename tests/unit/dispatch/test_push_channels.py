"""PushChannels: one builder for every push target, over both loopback services."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from services.dispatch.model import FcmTarget
from services.dispatch.push import send
from services.dispatch.push.channels import PushChannels
from services.dispatch.push.fcm import ServiceAccount
from services.dispatch.push.webpush import VapidConfig, generate_vapid_private_key
from services.dispatch.retry import Disable, HttpResponse, RetryPolicy, decide
from tests.support.push_receivers import FcmReceiver, WebPushReceiver, running
from tests.unit.dispatch.factories import make_incident


async def test_both_channels_deliver_and_fcm_recovers_from_401() -> None:
    with running(WebPushReceiver(), FcmReceiver()) as (webpush, fcm):
        assert isinstance(webpush, WebPushReceiver) and isinstance(fcm, FcmReceiver)
        channels = PushChannels(
            vapid=VapidConfig(generate_vapid_private_key(), "mailto:ops@city.example"),
            fcm_account=ServiceAccount.from_json(fcm.service_account()),
            fcm_base_url=fcm.base_url,
        )
        browser, phone = webpush.subscribe().target, fcm.register_device()
        inc = make_incident()
        async with httpx.AsyncClient(timeout=5) as client:
            for target in (browser, phone):
                now = datetime.now(UTC)
                request = await channels.build(target, inc, "created", now=now, client=client)
                outcome = await send(client, request)
                assert isinstance(outcome, HttpResponse) and outcome.status in (200, 201)
            # FCM stops accepting our token: the 401 is observed, the retry fetches a new one
            fcm.revoke_access_tokens()
            request = await channels.build(phone, inc, "updated", now=now, client=client)
            outcome = await send(client, request)
            assert isinstance(outcome, HttpResponse) and outcome.status == 401
            channels.observe(phone, outcome)
            request = await channels.build(phone, inc, "updated", now=now, client=client)
            outcome = await send(client, request)
            assert isinstance(outcome, HttpResponse) and outcome.status == 200
        assert webpush.received[0].json()["data"]["incident_id"] == inc.incident_id
        assert [r.message["data"]["event"] for r in fcm.received] == ["created", "updated"]
        assert fcm.token_requests == 2


async def test_unconfigured_channel_is_refused() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="FCM is not configured"):
            await PushChannels().build(
                FcmTarget("t"), make_incident(), "created", now=datetime.now(UTC), client=client
            )


def test_policy_per_target() -> None:
    policy = PushChannels().policy(FcmTarget("t"), RetryPolicy())
    t = datetime.now(UTC)
    decision = decide(
        1, HttpResponse(404), now=t, first_attempt_at=t, policy=policy, jitter=lambda: 0.5
    )
    assert isinstance(decision, Disable)
