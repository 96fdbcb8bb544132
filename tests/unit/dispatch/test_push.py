"""send(): real HTTP outcomes mapped for the retry policy; the programmable webhook receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from services.dispatch.formats import render
from services.dispatch.push import HttpRequest, send
from services.dispatch.retry import (
    Delivered,
    HttpResponse,
    NetworkError,
    Retry,
    RetryPolicy,
    Timeout,
    decide,
)
from services.dispatch.signing import generate_secret, sign_headers, webhook_id
from tests.support.webhook_receiver import Reply, WebhookReceiver
from tests.unit.dispatch.factories import make_incident


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def post(url: str, body: bytes = b"{}", headers: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest("POST", url, headers or {}, body)


async def test_outcomes_of_scripted_replies(receiver: WebhookReceiver) -> None:
    receiver.script(
        "/hook",
        Reply(503, {"Retry-After": "7"}),
        Reply(410),
    )
    async with httpx.AsyncClient(timeout=5) as client:
        first = await send(client, post(receiver.url("/hook")))
        second = await send(client, post(receiver.url("/hook")))
        third = await send(client, post(receiver.url("/hook")))  # script used up: default 200
    assert isinstance(first, HttpResponse) and first.status == 503
    assert first.header("retry-after") == "7"
    assert isinstance(second, HttpResponse) and second.status == 410
    assert isinstance(third, HttpResponse) and third.status == 200
    assert len(receiver.received("/hook")) == 3


async def test_a_hanging_receiver_is_a_timeout(receiver: WebhookReceiver) -> None:
    receiver.script("/slow", Reply(hang=True))
    async with httpx.AsyncClient(timeout=0.3) as client:
        started = time.monotonic()
        outcome = await send(client, post(receiver.url("/slow")))
    assert isinstance(outcome, Timeout)
    assert time.monotonic() - started < 2
    await receiver.until(1, path="/slow")  # it did arrive: the receiver may have acted on it


async def test_a_slow_receiver_answers_late(receiver: WebhookReceiver) -> None:
    receiver.script("*", Reply(202, delay_s=0.2))
    async with httpx.AsyncClient(timeout=5) as client:
        started = time.monotonic()
        outcome = await send(client, post(receiver.url("/any")))
    assert isinstance(outcome, HttpResponse) and outcome.status == 202
    assert time.monotonic() - started >= 0.2


async def test_status_shorthand_puts_retry_after_on_429_and_503_only(
    receiver: WebhookReceiver,
) -> None:
    receiver.statuses("/hook", 429, 500, 503, retry_after="3")
    async with httpx.AsyncClient(timeout=5) as client:
        outcomes = [await send(client, post(receiver.url("/hook"))) for _ in range(4)]
    assert all(isinstance(o, HttpResponse) for o in outcomes)
    answers = [(o.status, o.header("retry-after")) for o in outcomes]  # type: ignore[union-attr]
    assert answers == [(429, "3"), (500, None), (503, "3"), (200, None)]


async def test_hanging_requests_are_counted_in_flight_until_released(
    receiver: WebhookReceiver,
) -> None:
    receiver.script("/hook", Reply(hang=True), Reply(hang=True))
    async with httpx.AsyncClient(timeout=5) as client:
        pending = [asyncio.create_task(send(client, post(receiver.url("/hook")))) for _ in "ab"]
        await receiver.until(2, path="/hook")
        assert receiver.in_flight == 2
        receiver.release()  # hanging handlers now answer their scripted status
        outcomes = await asyncio.gather(*pending)
    assert [o.status for o in outcomes] == [200, 200]  # type: ignore[union-attr]
    assert (receiver.in_flight, receiver.max_in_flight) == (0, 2)
    assert [r.json() for r in receiver.received()] == [{}, {}]


async def test_a_closed_port_is_a_network_error() -> None:
    with WebhookReceiver() as gone:
        url = gone.url()
    async with httpx.AsyncClient(timeout=2) as client:
        outcome = await send(client, post(url))
    assert isinstance(outcome, NetworkError)


async def test_signed_webhook_retried_until_delivered_with_one_id(
    receiver: WebhookReceiver,
) -> None:
    # the pieces together: render, sign per attempt, send, decide - as the workers do
    secret = generate_secret()
    inc = make_incident()
    body = render("json", inc, "created", sender="shotline.city.example").body
    msg_id = webhook_id("sub_1", inc.incident_id, inc.version)
    receiver.script("/hook", Reply(503), Reply(429, {"Retry-After": "0"}), Reply(200))
    first = datetime.now(UTC)
    decisions = []
    async with httpx.AsyncClient(timeout=5) as client:
        for attempt in (1, 2, 3):
            t = datetime.now(UTC)
            headers = sign_headers(msg_id, t, body, [secret]) | {"content-type": "application/json"}
            outcome = await send(client, post(receiver.url("/hook"), body, headers))
            decisions.append(
                decide(
                    attempt,
                    outcome,
                    now=datetime.now(UTC),
                    first_attempt_at=first,
                    policy=RetryPolicy(),
                    jitter=lambda: 0.5,
                )
            )
    assert [type(d) for d in decisions] == [Retry, Retry, Delivered]
    got = receiver.received("/hook")
    assert {r.headers["webhook-id"] for r in got} == {msg_id}  # receivers dedupe on it
    for request in got:  # each attempt verifies as a real receiver would
        assert Webhook(secret).verify(request.body, request.headers)["data"]["version"] == 1
