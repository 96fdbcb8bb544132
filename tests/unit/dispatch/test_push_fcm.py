"""FCM HTTP v1 through the adapter to a loopback token endpoint + messages:send fake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.dispatch.push import push_message, retry_policy, send
from services.dispatch.push.fcm import (
    ServiceAccount,
    TokenError,
    TokenSource,
    build_assertion,
    build_send_request,
    error_code,
)
from services.dispatch.retry import (
    Disable,
    HttpResponse,
    NetworkError,
    Retry,
    RetryPolicy,
    decide,
)
from tests.support.push_receivers import FcmReceiver
from tests.unit.dispatch.factories import make_incident

POLICY = retry_policy("fcm", RetryPolicy())


@pytest.fixture(scope="module")
def fcm() -> Iterator[FcmReceiver]:
    with FcmReceiver(project_id="shotline-test") as receiver:
        yield receiver


@pytest.fixture
def account(fcm: FcmReceiver) -> ServiceAccount:
    return ServiceAccount.from_json(fcm.service_account())


def now() -> datetime:
    return datetime.now(UTC)


async def test_token_then_send_with_high_priority(
    fcm: FcmReceiver, account: ServiceAccount
) -> None:
    device = fcm.register_device()
    source = TokenSource(account)
    message = push_message(make_incident(), "created")
    async with httpx.AsyncClient(timeout=5) as client:
        token = await source.token(client, now())
        assert await source.token(client, now()) == token  # cached
        assert source.fetches == 1
        request = build_send_request(
            device,
            message,
            project_id=account.project_id,
            access_token=token,
            now=now(),
            ttl_s=90,
            base_url=fcm.base_url,
        )
        outcome = await send(client, request)
    assert isinstance(outcome, HttpResponse) and outcome.status == 200, fcm.rejected
    got = next(r.message for r in fcm.received if r.message["token"] == device.token)
    assert got["notification"] == {"title": message.title, "body": message.body}
    assert got["data"] == message.data
    assert got["android"]["priority"] == "high" and got["android"]["ttl"] == "90s"
    assert got["apns"]["headers"]["apns-priority"] == "10"
    assert got["webpush"]["headers"]["Urgency"] == "high"


async def test_token_is_refetched_when_it_nears_expiry() -> None:
    skew = [0.0]  # the fake's clock runs with ours, shifted by skew[0] seconds
    with FcmReceiver(clock=lambda: time.time() + skew[0]) as fake:
        source = TokenSource(ServiceAccount.from_json(fake.service_account()))
        async with httpx.AsyncClient(timeout=5) as client:
            first = await source.token(client, now())
            # 3599 s lifetime with a 60 s margin: 58 min later it is still used ...
            assert await source.token(client, now() + timedelta(minutes=58)) == first
            assert source.fetches == 1
            # ... at 59 min 10 s it is renewed
            skew[0] = 3550
            later = await source.token(client, now() + timedelta(seconds=3550))
    assert source.fetches == 2 and later != first


async def test_expired_access_token_is_retried_with_a_fresh_one(
    fcm: FcmReceiver, account: ServiceAccount
) -> None:
    device = fcm.register_device()
    source = TokenSource(account)
    message = push_message(make_incident(), "created")
    async with httpx.AsyncClient(timeout=5) as client:
        token = await source.token(client, now())
        fcm.revoke_access_tokens()
        request = build_send_request(
            device,
            message,
            project_id=account.project_id,
            access_token=token,
            now=now(),
            base_url=fcm.base_url,
        )
        outcome = await send(client, request)
        assert isinstance(outcome, HttpResponse) and outcome.status == 401
        t = now()
        assert isinstance(
            decide(1, outcome, now=t, first_attempt_at=t, policy=POLICY, jitter=lambda: 0.5), Retry
        )
        source.invalidate()
        fresh = await source.token(client, now())
        retried = await send(
            client,
            build_send_request(
                device,
                message,
                project_id=account.project_id,
                access_token=fresh,
                now=now(),
                base_url=fcm.base_url,
            ),
        )
    assert isinstance(retried, HttpResponse) and retried.status == 200


async def test_unregistered_device_disables_the_subscription(
    fcm: FcmReceiver, account: ServiceAccount
) -> None:
    device = fcm.register_device()
    fcm.unregister_device(device)
    async with httpx.AsyncClient(timeout=5) as client:
        token = await TokenSource(account).token(client, now())
        outcome = await send(
            client,
            build_send_request(
                device,
                push_message(make_incident(), "created"),
                project_id=account.project_id,
                access_token=token,
                now=now(),
                base_url=fcm.base_url,
            ),
        )
    assert isinstance(outcome, HttpResponse) and outcome.status == 404
    assert error_code(outcome) == "UNREGISTERED"
    t = now()
    assert isinstance(
        decide(1, outcome, now=t, first_attempt_at=t, policy=POLICY, jitter=lambda: 0.5), Disable
    )


async def test_assertion_signed_by_another_key_is_refused(fcm: FcmReceiver) -> None:
    info = fcm.service_account()
    info["private_key"] = (
        rsa.generate_private_key(65537, 2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    source = TokenSource(ServiceAccount.from_json(info))
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(TokenError) as caught:
            await source.token(client, now())
    assert isinstance(caught.value.outcome, HttpResponse)
    assert caught.value.outcome.status == 400
    assert "Signature verification failed" in fcm.rejected[-1][1]


async def test_assertion_for_the_wrong_audience_is_refused(
    fcm: FcmReceiver, account: ServiceAccount
) -> None:
    # our token_uri override decides the aud claim; the fake checks it against itself
    assertion = build_assertion(account, now(), audience="https://oauth2.googleapis.com/token")
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            fcm.token_uri,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
    assert response.status_code == 400
    assert "audience" in fcm.rejected[-1][1].lower()


async def test_unreachable_token_endpoint_is_a_network_error(account: ServiceAccount) -> None:
    with FcmReceiver() as gone:
        uri = gone.token_uri
    source = TokenSource(account, token_uri=uri)  # the port is closed now
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(TokenError) as caught:
            await source.token(client, now())
    assert isinstance(caught.value.outcome, NetworkError)


def test_assertion_lifetime_is_at_most_an_hour(account: ServiceAccount) -> None:
    with pytest.raises(ValueError, match="1 h"):
        build_assertion(account, now(), audience="x", lifetime=timedelta(hours=2))


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        # an OAuth client file, not a service account
        ({"type": "authorized_user"}, "service_account"),
        # missing key material
        ({"type": "service_account", "project_id": "p", "client_email": "e"}, "private_key"),
    ],
)
def test_service_account_validation(info: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ServiceAccount.from_json(info)
