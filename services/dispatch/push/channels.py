"""One object for the delivery workers: build the push request for any target.

:class:`PushChannels` holds the configured credentials (VAPID key, FCM service account) and
the FCM token cache; :meth:`PushChannels.build` turns (target, incident, event, ``now``)
into an :class:`~services.dispatch.push.HttpRequest` for :func:`~services.dispatch.push.send`,
and :meth:`PushChannels.observe` lets it react to an outcome (a 401 from FCM drops the
cached access token so the retry fetches a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import httpx

from services.dispatch.gazetteer import Place
from services.dispatch.model import FcmTarget, PushTarget, WebPushTarget
from services.dispatch.push import HttpRequest, push_message, retry_policy
from services.dispatch.push.fcm import DEFAULT_BASE_URL, ServiceAccount, TokenSource
from services.dispatch.push.fcm import build_send_request as build_fcm_request
from services.dispatch.push.webpush import VapidConfig
from services.dispatch.push.webpush import build_request as build_webpush_request
from services.dispatch.retry import AttemptOutcome, HttpResponse, RetryPolicy
from shared.schemas import IncidentRecord


@dataclass
class PushChannels:
    """Configured push channels. A channel left ``None`` refuses its targets (ValueError)."""

    vapid: VapidConfig | None = None
    fcm_account: ServiceAccount | None = None
    fcm_base_url: str = DEFAULT_BASE_URL
    fcm_token_uri: str | None = None
    ttl_s: int = 300
    _tokens: TokenSource | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fcm_account is not None:
            self._tokens = TokenSource(self.fcm_account, token_uri=self.fcm_token_uri)

    def policy(self, target: PushTarget, base: RetryPolicy) -> RetryPolicy:
        """The retry policy for ``target``'s service (404/410 disable; FCM 401 retries)."""
        return retry_policy("webpush" if isinstance(target, WebPushTarget) else "fcm", base)

    async def build(
        self,
        target: PushTarget,
        incident: IncidentRecord,
        event: str,
        *,
        now: datetime,
        client: httpx.AsyncClient,
        place: Place | None = None,
    ) -> HttpRequest:
        """The request of one push attempt.

        Blocks only to fetch an FCM access token when none is cached (bounded by the
        client's timeouts). Raises ``ValueError`` if the target's channel is not configured
        or the target is unusable, and :class:`~services.dispatch.push.fcm.TokenError`
        (carrying an attempt outcome for the retry policy) if the token endpoint fails.
        """
        message = push_message(incident, event, place)
        if isinstance(target, WebPushTarget):
            if self.vapid is None:
                raise ValueError("Web Push is not configured (no VAPID key)")
            return build_webpush_request(target, message, vapid=self.vapid, now=now)
        if isinstance(target, FcmTarget):
            if self.fcm_account is None or self._tokens is None:
                raise ValueError("FCM is not configured (no service account)")
            token = await self._tokens.token(client, now)
            return build_fcm_request(
                target,
                message,
                project_id=self.fcm_account.project_id,
                access_token=token,
                now=now,
                ttl_s=self.ttl_s,
                base_url=self.fcm_base_url,
            )
        raise ValueError(f"unknown push target {target!r}")

    def observe(self, target: PushTarget, outcome: AttemptOutcome) -> None:
        """Learn from an outcome: FCM 401 means our access token is no longer accepted."""
        if (
            isinstance(target, FcmTarget)
            and isinstance(outcome, HttpResponse)
            and outcome.status == 401
            and self._tokens is not None
        ):
            self._tokens.invalidate()
