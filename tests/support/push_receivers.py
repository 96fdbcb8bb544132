"""Loopback stand-ins for the services dispatch talks to, as real HTTP servers.

Each receiver is a tiny Starlette app served by uvicorn in a background thread on
``127.0.0.1`` at a free port (``start()`` / ``stop()``, or use it as a context manager), so
the code under test sends over real HTTP. They check what the real service would check:

* :class:`WebPushReceiver` - a push service (RFC 8030): verifies the VAPID JWT (RFC 8292:
  ES256 with the key from ``Authorization: vapid t=..., k=...``, ``aud`` = its own origin,
  ``exp`` in the future and at most 24 h ahead, ``sub`` present), requires ``TTL`` and
  ``Content-Encoding: aes128gcm``, and decrypts the body (RFC 8291) with the browser-side
  keys it hands out via :meth:`WebPushReceiver.subscribe`.
* :class:`FcmReceiver` - Google's OAuth token endpoint + FCM HTTP v1: verifies the RS256
  assertion against the service account's public key (``iss``, ``aud`` = the token URL,
  ``scope``, ``exp``, lifetime <= 1 h, ``kid``), issues bearer tokens, and checks the bearer
  token and the message shape on ``messages:send``.

The programmable webhook receiver is :mod:`tests.support.webhook_receiver`; the server
plumbing (and :func:`running`, re-exported here) is :mod:`tests.support.loopback`.

Everything recorded is readable from the test thread (lists guarded by a lock). Async tests
wait with ``await receiver.until(n)`` (never a blocking wait on the event loop that sends).
"""

from __future__ import annotations

import base64
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import http_ece
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.dispatch.model import FcmTarget, WebPushTarget
from tests.support.loopback import LoopbackServer
from tests.support.loopback import running as running  # re-export (older imports)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------------------------
# Web Push
# --------------------------------------------------------------------------------------------


@dataclass
class BrowserSubscription:
    """What a browser holds: its key pair and auth secret, and the endpoint it got."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _b64url(raw)

    @property
    def auth(self) -> str:
        return _b64url(self.auth_secret)

    @property
    def target(self) -> WebPushTarget:
        return WebPushTarget(endpoint=self.endpoint, p256dh=self.p256dh, auth=self.auth)

    def as_json(self) -> dict[str, Any]:
        """``PushSubscription.toJSON()``, as stored in a subscription's ``push.webpush``."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class ReceivedPush:
    token: str
    headers: dict[str, str]
    claims: dict[str, Any]
    vapid_public_key: str
    plaintext: bytes

    def json(self) -> Any:
        return orjson.loads(self.plaintext)


class WebPushReceiver(LoopbackServer):
    """A push service. ``clock`` (epoch seconds) is what ``exp`` is checked against."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        self._subs: dict[str, BrowserSubscription] = {}
        self._gone: set[str] = set()
        self.received: list[ReceivedPush] = []
        self.rejected: list[tuple[int, str]] = []  # (status, reason)

    def routes(self) -> list[Route]:
        return [Route("/push/{token}", self._push, methods=["POST"])]

    @property
    def origin(self) -> str:
        return self.base_url

    def subscribe(self) -> BrowserSubscription:
        """Act as a browser: make a P-256 key pair + 16-byte auth secret; get an endpoint."""
        token = secrets.token_urlsafe(16)
        sub = BrowserSubscription(
            endpoint=f"{self.base_url}/push/{token}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=secrets.token_bytes(16),
        )
        with self._lock:
            self._subs[token] = sub
        return sub

    def unsubscribe(self, sub: BrowserSubscription) -> None:
        """The browser dropped it: the endpoint answers 410 Gone from now on."""
        with self._lock:
            self._gone.add(sub.endpoint.rsplit("/", 1)[-1])

    async def until(self, n: int, timeout_s: float = 5.0) -> None:
        await self._until(lambda: len(self.received), n, timeout_s)

    def _reject(self, status: int, reason: str) -> Response:
        with self._lock:
            self.rejected.append((status, reason))
        return Response(reason, status_code=status)

    def _verify_vapid(self, authorization: str) -> tuple[dict[str, Any], str]:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"Authorization scheme {scheme!r} is not vapid")
        fields = dict(part.strip().split("=", 1) for part in params.split(",") if "=" in part)
        if "t" not in fields or "k" not in fields:
            raise ValueError("vapid credentials need t= and k=")
        raw_key = _b64url_decode(fields["k"])
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
        claims = jwt.decode(
            fields["t"],
            public_key,
            algorithms=["ES256"],
            audience=self.origin,
            options={"require": ["aud", "exp", "sub"], "verify_exp": False},
        )
        now = self.clock()
        if not now < claims["exp"] <= now + 86_400:
            raise ValueError(f"exp {claims['exp']} is not within (now, now + 24 h]")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError("sub must be a mailto: or https: contact")
        return claims, fields["k"]

    async def _push(self, request: Request) -> Response:
        token = request.path_params["token"]
        with self._lock:
            sub = self._subs.get(token)
            gone = token in self._gone
        if sub is None:
            return self._reject(404, "no such subscription")
        if gone:
            return self._reject(410, "subscription expired or unsubscribed")
        try:
            claims, key = self._verify_vapid(request.headers.get("authorization", ""))
        except (ValueError, jwt.PyJWTError) as exc:
            return self._reject(401, f"VAPID: {exc}")
        ttl = request.headers.get("ttl")
        if ttl is None or not ttl.isdigit():
            return self._reject(400, "TTL header missing or not a number")
        if request.headers.get("content-encoding") != "aes128gcm":
            return self._reject(415, "Content-Encoding must be aes128gcm")
        body = await request.body()
        try:
            plaintext = http_ece.decrypt(
                body,
                private_key=sub.private_key,
                auth_secret=sub.auth_secret,
                version="aes128gcm",
            )
        except Exception as exc:  # http_ece raises several types for bad ciphertexts
            return self._reject(400, f"cannot decrypt: {type(exc).__name__}: {exc}")
        with self._lock:
            self.received.append(ReceivedPush(token, dict(request.headers), claims, key, plaintext))
        return Response(status_code=201, headers={"location": f"{self.base_url}/m/{token}"})


# --------------------------------------------------------------------------------------------
# FCM
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedFcm:
    message: dict[str, Any]
    headers: dict[str, str]


class FcmReceiver(LoopbackServer):
    """Google's token endpoint + FCM v1 ``messages:send`` for one project."""

    def __init__(
        self, project_id: str = "shotline-test", clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.project_id = project_id
        self.clock = clock
        self.client_email = f"dispatch@{project_id}.iam.gserviceaccount.com"
        self.key_id = secrets.token_hex(8)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch s)
        self._devices: dict[str, bool] = {}  # registration token -> registered
        self._ids = itertools.count(1)
        self.token_requests = 0
        self.received: list[ReceivedFcm] = []
        self.rejected: list[tuple[int, str]] = []

    def routes(self) -> list[Route]:
        return [
            Route("/token", self._token, methods=["POST"]),
            Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
        ]

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account(self) -> dict[str, Any]:
        """The service-account key file (JSON) a project owner would download."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem,
            "client_email": self.client_email,
            "token_uri": self.token_uri,
        }

    def register_device(self) -> FcmTarget:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._devices[token] = True
        return FcmTarget(token=token)

    def unregister_device(self, target: FcmTarget) -> None:
        with self._lock:
            self._devices[target.token] = False

    def revoke_access_tokens(self) -> None:
        """Every issued access token stops working (as after expiry): sends get 401."""
        with self._lock:
            self._tokens.clear()

    async def until(self, n: int, timeout_s: float = 5.0) -> None:
        await self._until(lambda: len(self.received), n, timeout_s)

    def _reject(self, status: int, reason: str, payload: dict[str, Any]) -> Response:
        with self._lock:
            self.rejected.append((status, reason))
        return JSONResponse(payload, status_code=status)

    def _oauth_error(self, reason: str) -> Response:
        return self._reject(400, reason, {"error": "invalid_grant", "error_description": reason})

    async def _token(self, request: Request) -> Response:
        with self._lock:
            self.token_requests += 1
        form = parse_qs((await request.body()).decode())
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            return self._oauth_error("grant_type must be the JWT bearer grant")
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                # times are checked below against self.clock (tests move it)
                options={
                    "require": ["iss", "aud", "exp", "iat", "scope"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            return self._oauth_error(f"invalid assertion: {exc}")
        now = self.clock()
        if header.get("kid") != self.key_id:
            return self._oauth_error("unknown key id")
        if FCM_SCOPE not in str(claims["scope"]).split():
            return self._oauth_error("scope lacks firebase.messaging")
        if not claims["exp"] > now:
            return self._oauth_error("assertion expired")
        if claims["exp"] - claims["iat"] > 3600 or claims["iat"] > now + 60:
            return self._oauth_error("assertion lifetime over 1 h or issued in the future")
        token = "ya29." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = now + 3600
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    @staticmethod
    def _fcm_error(status: int, name: str, message: str, code: str | None = None) -> dict:
        error: dict[str, Any] = {"code": status, "message": message, "status": name}
        if code:
            error["details"] = [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ]
        return {"error": error}

    def _check_message(self, message: Any) -> str | None:
        """What the real API would refuse as INVALID_ARGUMENT (None: fine)."""
        if not isinstance(message, dict):
            return "message must be an object"
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return "exactly one of token, topic, condition"
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return "data values must be strings"
        android = message.get("android", {})
        if str(android.get("priority", "normal")).lower() not in ("normal", "high"):
            return "android.priority must be normal or high"
        ttl = android.get("ttl", "0s")
        if not (isinstance(ttl, str) and ttl.endswith("s")):
            return "android.ttl must be a duration like '300s'"
        headers = message.get("apns", {}).get("headers", {})
        if not all(isinstance(v, str) for v in headers.values()):
            return "apns header values must be strings"
        return None

    async def _send(self, request: Request) -> Response:
        if request.path_params["project"] != self.project_id:
            return self._reject(404, "unknown project", self._fcm_error(404, "NOT_FOUND", "?"))
        auth = request.headers.get("authorization", "")
        bearer = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        with self._lock:
            expiry = self._tokens.get(bearer or "")
        if expiry is None or expiry <= self.clock():
            return self._reject(
                401,
                "bad bearer token",
                self._fcm_error(401, "UNAUTHENTICATED", "Request had invalid credentials."),
            )
        try:
            message = orjson.loads(await request.body()).get("message")
        except (orjson.JSONDecodeError, AttributeError):
            message = None
        problem = self._check_message(message)
        if problem is not None:
            return self._reject(
                400, problem, self._fcm_error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
            )
        assert isinstance(message, dict)
        if "token" in message:
            with self._lock:
                registered = self._devices.get(message["token"])
            if not registered:
                return self._reject(
                    404,
                    "unregistered",
                    self._fcm_error(
                        404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"
                    ),
                )
        with self._lock:
            self.received.append(ReceivedFcm(message, dict(request.headers)))
        return JSONResponse({"name": f"projects/{self.project_id}/messages/{next(self._ids)}"})
