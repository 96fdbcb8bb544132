"""Webhook signing per the Standard Webhooks specification (pure).

Every webhook carries three headers:

* ``webhook-id``: the message id, the same on every retry and replay
  (:func:`webhook_id`), so a receiver can drop duplicates;
* ``webhook-timestamp``: integer seconds since the epoch of *this attempt*;
* ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` over
  ``"{id}.{timestamp}.{body}"``, one per active secret: during a rotation the current and the
  previous secret both sign, so receivers can switch at their own pace.

Secrets look like ``whsec_<base64 of 32 random bytes>`` (:func:`generate_secret`). Signing
uses the reference ``standardwebhooks`` package, so a receiver using any Standard Webhooks
library verifies our messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets as _secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
#: Standard Webhooks asks for secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def generate_secret(nbytes: int = SECRET_BYTES) -> str:
    """A fresh ``whsec_`` secret from the OS CSPRNG (shown to the subscriber once)."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"nbytes must be within [{MIN_SECRET_BYTES}, {MAX_SECRET_BYTES}]")
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def validate_secret(secret: str) -> str:
    """Return ``secret`` if it is a ``whsec_`` secret of 24..64 bytes; else raise ValueError."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with 'whsec_'")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is 'whsec_' + standard base64") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {len(raw)}"
        )
    return secret


def webhook_id(subscription_id: str, incident_id: str, version: int, generation: int = 0) -> str:
    """The message id of one (subscription, incident, version): stable across retries.

    Deterministic, so a crash between sending and recording an attempt re-sends the same
    id, and a receiver deduplicates on it. ``msg_`` + 32 hex digits of SHA-256.
    ``generation`` n > 0 names the message that replaces generation n-1 of the same version
    after the subscription changed format or URL (a webhook-id names one body only).
    """
    # \x1f (unit separator) cannot occur in identifiers, so ("a.b", "c") != ("a", "b.c")
    key = f"{subscription_id}\x1f{incident_id}\x1f{version}".encode()
    if generation:
        key += f"\x1f{generation}".encode()
    return "msg_" + hashlib.sha256(key).hexdigest()[:32]


def sign_headers(
    msg_id: str, timestamp: datetime, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt.

    ``timestamp`` must be timezone-aware (it is the attempt time; receivers reject
    timestamps more than ~5 minutes off their clock). One signature per secret, in the order
    given. Raises ``ValueError`` if there is no secret, a secret is malformed, the timestamp
    is naive, or the body is not UTF-8 (all our formats are).
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    # the library stamps its argument as UTC without converting: hand it UTC
    utc = timestamp.astimezone(UTC)
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    signatures = [Webhook(validate_secret(s)).sign(msg_id, utc, text) for s in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(utc.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def signing_secrets(
    current: str,
    previous: str | None,
    previous_valid_until: datetime | None,
    now: datetime,
) -> list[str]:
    """Secrets that sign at ``now``: the current one, plus the previous one during overlap.

    The previous secret signs while ``now < previous_valid_until`` (a rotation without an
    end time does not keep the old secret). Current first.
    """
    out = [current]
    if previous is not None and previous_valid_until is not None and now < previous_valid_until:
        out.append(previous)
    return out


def active_secrets(secrets: Iterable[tuple[str, datetime | None]], now: datetime) -> list[str]:
    """Generalisation for a secrets table: ``(secret, valid_until)`` pairs -> secrets in force.

    ``valid_until=None`` marks the current secret (never expires); the others sign while
    ``now < valid_until``. Order is kept (give the newest first).
    """
    return [s for s, until in secrets if until is None or now < until]
