"""Firebase Cloud Messaging HTTP v1: request builders + a small access-token source.

OAuth2 for a service account (RFC 7523 JWT bearer grant):

1. :func:`build_token_request` - a JWT assertion (RS256, signed with the service account's
   private key; ``iss`` = client email, ``aud`` = token URI, ``scope`` = firebase.messaging,
   ``iat``/``exp`` from ``now``, at most 1 h) POSTed form-encoded to the token URI;
2. :func:`parse_token_response` - the ``access_token`` and its expiry;
3. :func:`build_send_request` - ``POST {base}/v1/projects/{project}/messages:send`` with
   ``Authorization: Bearer``, high priority on every platform (android ``priority: high``,
   APNs ``apns-priority: 10``, webpush ``Urgency: high``) and a TTL.

:class:`TokenSource` caches the token and fetches a new one through :func:`send` when needed.
Token URI and FCM base URL are parameters so tests point them at loopback fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import orjson

from services.dispatch.model import FcmTarget
from services.dispatch.push import HttpRequest, PushMessage, send
from services.dispatch.retry import AttemptOutcome, HttpResponse

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = timedelta(hours=1)  # Google rejects longer assertions


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a Google service-account JSON key that FCM needs."""

    project_id: str
    client_email: str
    private_key: str = field(repr=False)  # PEM (PKCS#8)
    private_key_id: str = ""
    token_uri: str = DEFAULT_TOKEN_URI

    @classmethod
    def from_json(cls, info: Mapping[str, Any]) -> ServiceAccount:
        """From the parsed key file. Raises ``ValueError`` naming a missing field."""
        if info.get("type", "service_account") != "service_account":
            raise ValueError("not a service-account key (type must be 'service_account')")
        missing = [k for k in ("project_id", "client_email", "private_key") if not info.get(k)]
        if missing:
            raise ValueError(f"service account lacks {', '.join(missing)}")
        return cls(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key=info["private_key"],
            private_key_id=info.get("private_key_id", ""),
            token_uri=info.get("token_uri") or DEFAULT_TOKEN_URI,
        )


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expires_at: datetime

    def usable(self, now: datetime, margin: timedelta = timedelta(seconds=60)) -> bool:
        """Still valid for at least ``margin`` (a send takes time)."""
        return now + margin < self.expires_at


class TokenError(Exception):
    """The token endpoint did not give us a token; ``outcome`` says why (for retry)."""

    def __init__(self, message: str, outcome: AttemptOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def build_assertion(
    account: ServiceAccount,
    now: datetime,
    *,
    audience: str,
    lifetime: timedelta = MAX_ASSERTION_LIFETIME,
) -> str:
    """The signed RS256 JWT assertion. Raises ``ValueError`` on a lifetime over 1 h."""
    if not timedelta(0) < lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError("assertion lifetime must be within (0, 1 h]")
    iat = int(now.timestamp())
    claims = {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": audience,
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)


def build_token_request(
    account: ServiceAccount, now: datetime, *, token_uri: str | None = None
) -> HttpRequest:
    """The OAuth2 JWT-bearer token request (``token_uri`` overrides the account's)."""
    uri = token_uri or account.token_uri
    form = urlencode(
        {"grant_type": JWT_BEARER_GRANT, "assertion": build_assertion(account, now, audience=uri)}
    )
    return HttpRequest(
        "POST", uri, {"Content-Type": "application/x-www-form-urlencoded"}, form.encode()
    )


def parse_token_response(outcome: AttemptOutcome, now: datetime) -> AccessToken:
    """The token from the endpoint's answer. Raises :class:`TokenError` otherwise."""
    if not isinstance(outcome, HttpResponse) or outcome.status != 200:
        raise TokenError(f"token endpoint failed: {outcome}", outcome)
    try:
        doc = orjson.loads(outcome.body)
        token = doc["access_token"]
        expires_in = float(doc.get("expires_in", 3600))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise TokenError("token endpoint answered without an access_token", outcome) from None
    if not isinstance(token, str) or not token:
        raise TokenError("token endpoint answered an empty access_token", outcome)
    return AccessToken(token=token, expires_at=now + timedelta(seconds=expires_in))


def build_send_request(
    target: FcmTarget,
    message: PushMessage,
    *,
    project_id: str,
    access_token: str,
    now: datetime,
    ttl_s: int = 300,
    base_url: str = DEFAULT_BASE_URL,
) -> HttpRequest:
    """The ``messages:send`` request for one device token, high priority everywhere."""
    body = {
        "message": {
            "token": target.token,
            "notification": {"title": message.title, "body": message.body},
            "data": dict(message.data),
            "android": {
                "priority": "high",
                "ttl": f"{ttl_s}s",
                "collapse_key": message.tag[:64],
                "notification": {"tag": message.tag},
            },
            "apns": {
                "headers": {
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                    "apns-expiration": str(int(now.timestamp()) + ttl_s),
                    "apns-collapse-id": message.tag[:64],
                },
                "payload": {"aps": {"sound": "default", "interruption-level": "time-sensitive"}},
            },
            "webpush": {"headers": {"Urgency": "high", "TTL": str(ttl_s)}},
        }
    }
    url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
    headers = {
        "Authorization": f"Bearer {access_token}",
        "Content-Type": "application/json; charset=utf-8",
    }
    return HttpRequest("POST", url, headers, orjson.dumps(body))


def error_code(outcome: AttemptOutcome) -> str | None:
    """FCM's ``errorCode`` (e.g. ``UNREGISTERED``) from an error answer, if present."""
    if not isinstance(outcome, HttpResponse) or not outcome.body:
        return None
    try:
        details = orjson.loads(outcome.body)["error"].get("details", [])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    for detail in details:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return None


class TokenSource:
    """Caches the access token; one fetch at a time per instance (an asyncio lock).

    ``await token(client, now)`` returns a usable token, fetching one if needed (blocks for
    at most the client's timeouts); raises :class:`TokenError` (with an attempt outcome,
    e.g. a network error) if the endpoint fails. Call :meth:`invalidate` after a 401.
    """

    def __init__(self, account: ServiceAccount, *, token_uri: str | None = None) -> None:
        self.account = account
        self.token_uri = token_uri or account.token_uri
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        self._token = None

    async def token(self, client: httpx.AsyncClient, now: datetime) -> str:
        async with self._lock:
            if self._token is None or not self._token.usable(now):
                request = build_token_request(self.account, now, token_uri=self.token_uri)
                self.fetches += 1
                self._token = parse_token_response(await send(client, request), now)
            return self._token.token
