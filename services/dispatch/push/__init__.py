"""Officer push: the short message, the HTTP request type, and the one async ``send``.

The channel adapters (:mod:`.webpush`, :mod:`.fcm`) are *pure request builders*: from
(target, message, keys, ``now``) they build an :class:`HttpRequest`; :func:`send` carries any
such request over an ``httpx.AsyncClient`` and maps what happened to a retry
:data:`~services.dispatch.retry.AttemptOutcome` (it also suits webhooks). Retry decisions
then use the channel's policy (:func:`retry_policy`).

Push messages are short. The visible text says what and when - class, rounds, zone, shot
time - and, when the city's layers are loaded, the short address line of the version's place
("142 Main St, 18 m NE · near Main St & 2nd Ave"): words an officer can drive to, where raw
coordinates would mean nothing on a lock screen. Nothing depends on the officer's distance
(their position is unknown to us). The position with its 95 % radius travels in ``data`` for
the app to put on a map (with the address line as ``address``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import httpx

from services.dispatch.formats.cap import EVENT_NAMES
from services.dispatch.gazetteer import Place
from services.dispatch.retry import (
    AttemptOutcome,
    HttpResponse,
    NetworkError,
    Refused,
    RetryPolicy,
    Timeout,
)
from services.dispatch.targets import TargetRefused
from shared.schemas import IncidentRecord, format_time

#: Bytes of a response body kept in :class:`HttpResponse` (error codes, not payloads).
MAX_RESPONSE_BODY = 2048


@dataclass(frozen=True)
class HttpRequest:
    """A fully built request: what goes on the wire, nothing left to compute."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class PushMessage:
    """A short officer notification. ``data`` values are strings (FCM requires it)."""

    title: str
    body: str
    data: dict[str, str]
    #: Replaces an older undelivered notification of the same incident on the device.
    tag: str


def push_message(
    incident: IncidentRecord, event: str, place: Place | None = None
) -> PushMessage:
    """The notification of one incident version for an officer (``event`` as delivered)."""
    loc = incident.location
    name = EVENT_NAMES[incident.classification]
    rounds = f"{incident.rounds} round{'s' if incident.rounds != 1 else ''}"
    if event == "cancelled" and incident.classification in ("gunfire", "probable_gunfire"):
        title = f"CANCELLED: {name.lower()} alert withdrawn"
    elif event == "cancelled":  # withdrawn because it was reclassified
        title = f"CANCELLED: alert withdrawn, now classified {name.lower()}"
    elif event == "downgraded":
        title = f"DOWNGRADED: not gunfire, now {name.lower()}"
    elif event == "updated":
        title = f"UPDATE {name.upper()}: {rounds}"
    else:
        title = f"{name.upper()}: {rounds}"
    if incident.exercise:
        title = f"EXERCISE (drill, not real): {title}"
    shot = incident.shot_time.strftime("%H:%M:%S UTC")
    if place is not None and place.text:
        body = f"{place.text} · zone {incident.zone} · shot at {shot}"
    else:
        body = f"Zone {incident.zone} · shot at {shot} · open for the map"
    data = {
        "incident_id": incident.incident_id,
        "version": str(incident.version),
        "event": event,
        "classification": incident.classification,
        "gunfire_probability": f"{incident.gunfire_probability:.3f}",
        "rounds": str(incident.rounds),
        "lat": f"{loc.lat:.6f}",
        "lon": f"{loc.lon:.6f}",
        "radius95_m": f"{loc.radius95_m:.1f}",
        "shot_time": format_time(incident.shot_time),
        "exercise": "true" if incident.exercise else "false",
    }
    if place is not None and place.text:
        data["address"] = place.text
    return PushMessage(title=title, body=body, data=data, tag=incident.incident_id)


def retry_policy(kind: Literal["webpush", "fcm"], base: RetryPolicy) -> RetryPolicy:
    """``base`` adjusted for a push service.

    Both: 404 and 410 mean the registration expired or was unsubscribed -> disable.
    FCM: 401 means our access token expired -> retry (the token source fetches a new one).
    """
    disable = base.disable_statuses | {404, 410}
    retry = base.retry_statuses | ({401} if kind == "fcm" else set())
    return dataclasses.replace(base, disable_statuses=disable, retry_statuses=frozenset(retry))


async def send(client: httpx.AsyncClient, request: HttpRequest) -> AttemptOutcome:
    """Send ``request``; map the result to an attempt outcome. Never raises ``httpx`` errors.

    Blocks for at most the client's timeouts. Timeouts -> :class:`Timeout`; any other
    transport failure -> :class:`NetworkError`; a host whose every address is refused
    (:mod:`services.dispatch.targets`) -> :class:`Refused`; an answer -> :class:`HttpResponse`
    (with the start of its body). Cancellation propagates.
    """
    try:
        response = await client.request(
            request.method, request.url, headers=request.headers, content=request.body
        )
    except TargetRefused as exc:
        return Refused(str(exc)[:500])
    except httpx.TimeoutException as exc:
        return Timeout(f"{type(exc).__name__}: {exc}"[:500])
    except httpx.HTTPError as exc:
        return NetworkError(f"{type(exc).__name__}: {exc}"[:500])
    return HttpResponse(
        status=response.status_code,
        headers=dict(response.headers),
        body=response.content[:MAX_RESPONSE_BODY],
    )
