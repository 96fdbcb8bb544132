"""Web Push request builder: RFC 8030 + VAPID (RFC 8292) + aes128gcm (RFC 8291).

:func:`build_request` is pure but for the fresh randomness that encryption needs (an
ephemeral ECDH key and salt per message, as RFC 8291 requires). The VAPID JWT is signed with
claims ``aud`` = the push service's origin, ``exp`` = ``now`` + ``token_lifetime`` (at most
24 h) and ``sub`` = the operator contact. Encryption and signing use pywebpush / py_vapid /
http_ece.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from services.dispatch.model import WebPushTarget
from services.dispatch.push import HttpRequest, PushMessage

MAX_TOKEN_LIFETIME = timedelta(hours=24)  # RFC 8292 section 2


@dataclass(frozen=True)
class VapidConfig:
    """The application server's VAPID identity and message defaults.

    ``private_key``: PEM, or the base64url raw/DER form that py_vapid accepts.
    ``subject``: ``mailto:`` or ``https:`` contact of the operator (push services require it).
    Raises ``ValueError`` on a bad key, subject, TTL or token lifetime.
    """

    private_key: str = field(repr=False)
    subject: str
    ttl_s: int = 300
    token_lifetime: timedelta = timedelta(hours=12)

    def __post_init__(self) -> None:
        if not self.subject.startswith(("mailto:", "https:")):
            raise ValueError("VAPID subject must be a mailto: or https: URI")
        if not 0 <= self.ttl_s <= 2_419_200:
            raise ValueError("ttl_s must be within [0, 28 days]")
        if not timedelta(0) < self.token_lifetime <= MAX_TOKEN_LIFETIME:
            raise ValueError("token_lifetime must be within (0, 24 h]")
        _ = self.vapid  # fail fast on a bad key

    @cached_property
    def vapid(self) -> Vapid02:
        try:
            if "-----BEGIN" in self.private_key:
                key = serialization.load_pem_private_key(self.private_key.encode(), None)
                if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != (
                    "secp256r1"
                ):
                    raise ValueError("VAPID keys are P-256 (prime256v1)")
                return Vapid02(key)
            return Vapid02.from_string(self.private_key)  # base64url raw scalar or DER
        except Exception as exc:  # py_vapid raises several types for bad input
            raise ValueError(f"not a usable VAPID private key: {type(exc).__name__}") from None

    @property
    def application_server_key(self) -> str:
        """The public key browsers pass to ``pushManager.subscribe`` (base64url, raw point)."""
        return public_key_b64url(self.vapid)


def public_key_b64url(vapid: Vapid02) -> str:
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def generate_vapid_private_key() -> str:
    """A new VAPID private key as PEM (PKCS#8), for configuration."""
    vapid = Vapid02()
    vapid.generate_keys()
    return vapid.private_pem().decode("ascii")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the VAPID ``aud`` of a push endpoint."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def topic_for(tag: str) -> str:
    """RFC 8030 ``Topic`` (<= 32 base64url chars): a newer message of one incident replaces an
    older one still queued at the push service."""
    digest = hashlib.sha256(tag.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")[:32]


def payload_bytes(message: PushMessage) -> bytes:
    """The JSON the service worker receives (``event.data.json()``)."""
    return orjson.dumps(
        {"title": message.title, "body": message.body, "tag": message.tag, "data": message.data}
    )


def build_request(
    target: WebPushTarget,
    message: PushMessage,
    *,
    vapid: VapidConfig,
    now: datetime,
    urgency: str = "high",
) -> HttpRequest:
    """The POST to the browser's push service, encrypted to the browser's keys.

    Raises ``ValueError`` if the target keys are malformed or the payload exceeds 4 KiB
    (the limit push services guarantee, RFC 8291 section 4).
    """
    payload = payload_bytes(message)
    if len(payload) > 3993:  # 4096 - aes128gcm header (86) - padding delimiter and tag (17)
        raise ValueError(f"push payload too large ({len(payload)} bytes)")
    claims = {
        "aud": origin(target.endpoint),
        "exp": int((now + vapid.token_lifetime).timestamp()),
        "sub": vapid.subject,
    }
    headers = dict(vapid.vapid.sign(claims))  # {"Authorization": "vapid t=<jwt>,k=<key>"}
    try:
        encrypted = WebPusher(target.as_subscription_info()).encode(payload, "aes128gcm")
    except Exception as exc:  # pywebpush raises its own and binascii errors for bad keys
        raise ValueError(f"cannot encrypt to this subscription: {exc}") from None
    headers.update(
        {
            "TTL": str(vapid.ttl_s),
            "Urgency": urgency,
            "Topic": topic_for(message.tag),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
    )
    return HttpRequest("POST", target.endpoint, headers, encrypted["body"])
