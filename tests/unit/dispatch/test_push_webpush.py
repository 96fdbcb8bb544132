"""Web Push through the adapter to a loopback push service that checks VAPID and decrypts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.dispatch.push import push_message, retry_policy, send
from services.dispatch.push.webpush import (
    VapidConfig,
    build_request,
    generate_vapid_private_key,
    topic_for,
)
from services.dispatch.retry import (
    Disable,
    GiveUp,
    HttpResponse,
    RetryPolicy,
    decide,
)
from tests.support.push_receivers import WebPushReceiver
from tests.unit.dispatch.factories import make_incident

POLICY = retry_policy("webpush", RetryPolicy())


@pytest.fixture(scope="module")
def service() -> Iterator[WebPushReceiver]:
    with WebPushReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def vapid() -> VapidConfig:
    return VapidConfig(generate_vapid_private_key(), "mailto:dispatch@city.example", ttl_s=120)


def now() -> datetime:
    return datetime.now(UTC)  # the receiver checks exp against its wall clock


async def deliver(request: object) -> object:
    async with httpx.AsyncClient(timeout=5) as client:
        return await send(client, request)  # type: ignore[arg-type]


async def test_payload_arrives_decrypted_with_a_valid_vapid_token(
    service: WebPushReceiver, vapid: VapidConfig
) -> None:
    browser = service.subscribe()
    inc = make_incident(rounds=4)
    message = push_message(inc, "created")
    t = now()
    outcome = await deliver(build_request(browser.target, message, vapid=vapid, now=t))
    assert isinstance(outcome, HttpResponse) and outcome.status == 201, service.rejected
    got = next(r for r in service.received if r.token in browser.endpoint)
    # the browser's service worker gets exactly our notification
    assert got.json() == {
        "title": message.title,
        "body": message.body,
        "tag": message.tag,
        "data": message.data,
    }
    assert got.json()["title"] == "GUNFIRE: 4 rounds"
    # VAPID: audience is the push service's origin, 12 h expiry from now, our contact
    assert got.claims["aud"] == service.origin
    assert got.claims["exp"] == int((t + timedelta(hours=12)).timestamp())
    assert got.claims["sub"] == "mailto:dispatch@city.example"
    assert got.vapid_public_key == vapid.application_server_key
    # urgent delivery, bounded lifetime, one slot per incident at the push service
    assert got.headers["urgency"] == "high"
    assert got.headers["ttl"] == "120"
    assert got.headers["topic"] == topic_for(inc.incident_id)
    assert len(got.headers["topic"]) <= 32


async def test_every_message_is_encrypted_afresh(vapid: VapidConfig) -> None:
    # RFC 8291: a new ephemeral key and salt per message, so equal alerts look different
    with WebPushReceiver() as service:
        target = service.subscribe().target
        message = push_message(make_incident(), "created")
        t = now()
        a = build_request(target, message, vapid=vapid, now=t)
        b = build_request(target, message, vapid=vapid, now=t)
        assert a.body != b.body


async def test_an_expired_vapid_token_is_refused_and_not_retried(
    service: WebPushReceiver, vapid: VapidConfig
) -> None:
    browser = service.subscribe()
    stale = now() - timedelta(hours=13)  # exp = stale + 12 h: an hour ago
    request = build_request(
        browser.target, push_message(make_incident(), "created"), vapid=vapid, now=stale
    )
    outcome = await deliver(request)
    assert isinstance(outcome, HttpResponse) and outcome.status == 401
    assert "exp" in service.rejected[-1][1]
    t = now()
    assert isinstance(
        decide(1, outcome, now=t, first_attempt_at=t, policy=POLICY, jitter=lambda: 0.5), GiveUp
    )


async def test_a_token_for_another_audience_is_refused(
    service: WebPushReceiver, vapid: VapidConfig
) -> None:
    browser = service.subscribe()
    message = push_message(make_incident(), "created")
    t = now()
    request = build_request(browser.target, message, vapid=vapid, now=t)
    elsewhere = vapid.vapid.sign(
        {
            "aud": "https://push.elsewhere.example",
            "exp": int(t.timestamp()) + 600,
            "sub": vapid.subject,
        }
    )
    forged = type(request)(
        request.method, request.url, {**request.headers, **elsewhere}, request.body
    )
    outcome = await deliver(forged)
    assert isinstance(outcome, HttpResponse) and outcome.status == 401
    assert "audience" in service.rejected[-1][1].lower()


async def test_a_body_encrypted_for_another_browser_cannot_be_read(
    service: WebPushReceiver, vapid: VapidConfig
) -> None:
    mine, other = service.subscribe(), service.subscribe()
    wrong_keys = type(mine.target)(mine.endpoint, other.p256dh, other.auth)
    request = build_request(
        wrong_keys, push_message(make_incident(), "created"), vapid=vapid, now=now()
    )
    outcome = await deliver(request)
    assert isinstance(outcome, HttpResponse) and outcome.status == 400
    assert "decrypt" in service.rejected[-1][1]


async def test_unsubscribed_browser_disables_the_subscription(
    service: WebPushReceiver, vapid: VapidConfig
) -> None:
    browser = service.subscribe()
    service.unsubscribe(browser)
    outcome = await deliver(
        build_request(
            browser.target, push_message(make_incident(), "created"), vapid=vapid, now=now()
        )
    )
    assert isinstance(outcome, HttpResponse) and outcome.status == 410
    t = now()
    assert isinstance(
        decide(1, outcome, now=t, first_attempt_at=t, policy=POLICY, jitter=lambda: 0.5), Disable
    )


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        # not a key
        ({"private_key": "bm90IGEga2V5"}, "VAPID private key"),
        # push services require a contact
        ({"subject": "dispatch@city.example"}, "mailto"),
        # RFC 8292: tokens live at most 24 h
        ({"token_lifetime": timedelta(hours=25)}, "24 h"),
    ],
)
def test_vapid_config_validation(kwargs: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {
        "private_key": generate_vapid_private_key(),
        "subject": "mailto:a@city.example",
    } | kwargs
    with pytest.raises(ValueError, match=problem):
        VapidConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "title"),
    [
        ("created", "GUNFIRE: 3 rounds"),
        ("updated", "UPDATE GUNFIRE: 3 rounds"),
        ("cancelled", "CANCELLED: gunfire alert withdrawn"),
    ],
)
def test_push_message_wording(event: str, title: str) -> None:
    message = push_message(make_incident(), event)
    assert message.title == title
    # zone and time; no coordinates/address and nothing about the officer's distance
    assert message.body == "Zone pgh-east · shot at 01:02:03 UTC · open for the map"
    assert "40.45" not in message.title + message.body
    # the position (with its 95 % radius) is data for the app's map
    assert (message.data["lat"], message.data["lon"]) == ("40.457300", "-79.925100")
    assert message.data["radius95_m"] == "18.5"
    assert all(isinstance(v, str) for v in message.data.values())
