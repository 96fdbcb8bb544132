"""Standard Webhooks signing, verified with the reference `standardwebhooks` package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.dispatch.signing import (
    active_secrets,
    generate_secret,
    sign_headers,
    signing_secrets,
    validate_secret,
    webhook_id,
)

BODY = b'{"type":"incident.created","data":{"zone":"pgh-east","note":"\xc2\xb1 18 m"}}'


def now() -> datetime:
    # standardwebhooks checks the timestamp against the wall clock (5 min tolerance)
    return datetime.now(UTC)


def test_generated_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    a, b = generate_secret(), generate_secret()
    assert a.startswith("whsec_") and a != b
    assert len(base64.b64decode(a.removeprefix("whsec_"))) == 32
    assert validate_secret(a) == a


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        # missing prefix
        (base64.b64encode(b"x" * 32).decode(), "whsec_"),
        # not base64
        ("whsec_not*base64!", "base64"),
        # too short (16 bytes)
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24 to 64"),
    ],
)
def test_validate_secret_rejects(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_secret(secret)


def test_signature_verifies_with_the_reference_library() -> None:
    secret = generate_secret()
    headers = sign_headers("msg_1", now(), BODY, [secret])
    assert Webhook(secret).verify(BODY, headers)["data"]["zone"] == "pgh-east"
    assert headers["webhook-id"] == "msg_1"


def test_tampered_body_or_other_secret_fails() -> None:
    secret = generate_secret()
    headers = sign_headers("msg_1", now(), BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"pgh", b"PGH"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_rotation_every_active_secret_verifies() -> None:
    current, previous = generate_secret(), generate_secret()
    t = now()
    secrets = signing_secrets(current, previous, t + timedelta(hours=1), t)
    assert secrets == [current, previous]
    headers = sign_headers("msg_2", t, BODY, secrets)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in secrets:  # a receiver on either secret accepts the message
        Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(
    ("previous", "valid_for", "expected"),
    [
        # overlap still running: both sign, current first
        ("whsec_prev", timedelta(seconds=1), ["whsec_cur", "whsec_prev"]),
        # overlap ended exactly now: current only
        ("whsec_prev", timedelta(0), ["whsec_cur"]),
        # overlap ended in the past
        ("whsec_prev", timedelta(hours=-1), ["whsec_cur"]),
        # rotation without an end time keeps nothing old
        ("whsec_prev", None, ["whsec_cur"]),
        # never rotated
        (None, None, ["whsec_cur"]),
    ],
)
def test_signing_secrets_table(
    previous: str | None, valid_for: timedelta | None, expected: list[str]
) -> None:
    t = datetime(2026, 11, 25, tzinfo=UTC)
    until = None if valid_for is None else t + valid_for
    assert signing_secrets("whsec_cur", previous, until, t) == expected


def test_active_secrets_from_a_secrets_table() -> None:
    t = datetime(2026, 11, 25, tzinfo=UTC)
    rows = [("new", None), ("old", t + timedelta(minutes=5)), ("older", t - timedelta(days=1))]
    assert active_secrets(rows, t) == ["new", "old"]


def test_after_the_overlap_the_old_secret_no_longer_verifies() -> None:
    current, previous = generate_secret(), generate_secret()
    t = now()
    headers = sign_headers("msg_3", t, BODY, signing_secrets(current, previous, t, t))
    Webhook(current).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(previous).verify(BODY, headers)


def test_timestamp_is_the_attempt_instant_whatever_its_offset() -> None:
    secret = generate_secret()
    t = now()
    local = t.astimezone(timezone(timedelta(hours=-5)))
    headers = sign_headers("msg_4", local, BODY, [secret])
    assert headers["webhook-timestamp"] == str(int(t.timestamp()))
    Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(
    ("secrets", "timestamp", "body", "problem"),
    [
        # nothing to sign with
        ([], datetime(2026, 1, 1, tzinfo=UTC), BODY, "at least one"),
        # naive timestamps are ambiguous
        (["whsec_" + "A" * 44], datetime(2026, 1, 1), BODY, "timezone-aware"),
        # malformed secret
        (["not-a-secret"], datetime(2026, 1, 1, tzinfo=UTC), BODY, "whsec_"),
        # our formats are UTF-8; anything else is a bug upstream
        ([generate_secret()], datetime(2026, 1, 1, tzinfo=UTC), b"\xff\xfe", "utf-8"),
    ],
)
def test_sign_headers_rejects(
    secrets: list[str], timestamp: datetime, body: bytes, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        sign_headers("msg", timestamp, body, secrets)


def test_webhook_id_is_stable_and_distinct() -> None:
    a = webhook_id("sub_1", "pgh:abc", 2)
    assert a == webhook_id("sub_1", "pgh:abc", 2)  # retries and replays: same id
    assert a.startswith("msg_") and len(a) == 36
    others = {
        webhook_id("sub_2", "pgh:abc", 2),
        webhook_id("sub_1", "pgh:abd", 2),
        webhook_id("sub_1", "pgh:abc", 3),
        # no ambiguity when ids contain the separator people would use
        webhook_id("sub_1/pgh:abc", "", 2),
    }
    assert a not in others and len(others) == 4
