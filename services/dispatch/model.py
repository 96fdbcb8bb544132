"""Pure data of dispatch: subscriptions, push targets and delivery plans.

The store maps its rows onto these dataclasses; the domain modules (:mod:`.routing`,
:mod:`.formats`, :mod:`.push`) only ever see these, never database rows.

A :class:`Subscription` is validated when it is built (raises ``ValueError`` naming the
problem), and it carries its geofence as a *prepared* shapely geometry, built once per
object: keep the objects around (e.g. cache them per ``updated_at``) and routing an incident
costs one point-in-polygon test per subscription.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import shapely
from shapely.geometry.base import BaseGeometry

from shared.schemas import IncidentClass, IncidentEvent

Channel = Literal["webhook", "push"]
Format = Literal["json", "cap", "eido"]
#: Life-cycle of one outbox row (one subscription x one incident version).
#: ``failed``: the receiver refused for good (4xx) or the subscription was disabled;
#: ``dead``: the retry budget ran out (dead-letter, replayable by an operator);
#: ``superseded``: never to be sent (see :mod:`services.dispatch.ordering`): collapsed into a
#: newer version, older than one already sent, after a cancel, or re-planned.
DeliveryState = Literal["pending", "delivered", "failed", "dead", "superseded"]
#: What a subscriber is told: the incident's events, plus ``downgraded`` - an incident it
#: was alerted to as gunfire is now classified as something else.
DeliveryEvent = Literal["created", "updated", "cancelled", "downgraded"]

CHANNELS: tuple[str, ...] = get_args(Channel)
FORMATS: tuple[str, ...] = get_args(Format)
CLASSES: tuple[str, ...] = get_args(IncidentClass)
EVENTS: tuple[str, ...] = get_args(IncidentEvent)
DELIVERY_STATES: tuple[str, ...] = get_args(DeliveryState)
DELIVERY_EVENTS: tuple[str, ...] = get_args(DeliveryEvent)


@dataclass(frozen=True)
class WebPushTarget:
    """A browser's ``PushSubscription`` (RFC 8030 endpoint + RFC 8291 keys, base64url)."""

    endpoint: str
    p256dh: str
    auth: str

    def as_subscription_info(self) -> dict[str, Any]:
        """The ``PushSubscription.toJSON()`` shape that pywebpush expects."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclass(frozen=True)
class FcmTarget:
    """A Firebase Cloud Messaging registration token (one device/app instance)."""

    token: str


PushTarget = WebPushTarget | FcmTarget


def push_target_from_json(value: Mapping[str, Any]) -> PushTarget:
    """Parse the stored ``push`` column.

    Accepted shapes: ``{"webpush": {"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}}``
    (a browser's ``PushSubscription.toJSON()`` under ``webpush``) or
    ``{"fcm": {"token": ...}}``. Raises ``ValueError`` naming what is missing.
    """
    if "webpush" in value:
        wp = value["webpush"]
        if not isinstance(wp, Mapping):
            raise ValueError("push.webpush must be an object")
        endpoint = wp.get("endpoint")
        keys = wp.get("keys") or {}
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("https", "http"):
            raise ValueError("push.webpush.endpoint must be an http(s) URL")
        if not isinstance(keys, Mapping) or not all(
            isinstance(keys.get(k), str) and keys.get(k) for k in ("p256dh", "auth")
        ):
            raise ValueError("push.webpush.keys needs p256dh and auth (base64url strings)")
        return WebPushTarget(endpoint=endpoint, p256dh=keys["p256dh"], auth=keys["auth"])
    if "fcm" in value:
        fcm = value["fcm"]
        token = fcm.get("token") if isinstance(fcm, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ValueError("push.fcm.token must be a non-empty string")
        return FcmTarget(token=token)
    raise ValueError("push must have a 'webpush' or an 'fcm' member")


def endpoint_key(url: str) -> str:
    """The breaker / concurrency key of a URL: ``scheme://host:port`` (default ports filled)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


#: Breaker / concurrency key shared by every FCM delivery (one upstream service).
FCM_ENDPOINT_KEY = "fcm"


@dataclass(frozen=True, eq=False)
class Subscription:
    """One subscriber's wishes. Built from a store row; validated on construction.

    Raises ``ValueError`` if a field is out of its domain (unknown channel/format/class/
    event, probability outside [0, 1], webhook without URL, push without a valid target) or
    the geofence is invalid (see :func:`services.dispatch.routing.validate_geofence`).
    ``classes`` and ``events`` may be given as any iterable; they are kept as frozensets.
    Objects compare by identity (they hold a geometry).
    """

    subscription_id: str
    channel: Channel
    geofence: Mapping[str, Any]
    classes: frozenset[str]
    min_probability: float
    events: frozenset[str]
    format: Format = "json"
    enabled: bool = True
    url: str | None = None
    push: Mapping[str, Any] | None = None
    name: str = ""
    updated_at: datetime | None = field(default=None, compare=False)
    #: "required": told only of reviewed versions (see :mod:`services.dispatch.review`)
    review: str = "none"

    def __post_init__(self) -> None:
        # frozen dataclass: normalise through object.__setattr__ (construction time only)
        object.__setattr__(self, "classes", frozenset(_as_iterable(self.classes, "classes")))
        object.__setattr__(self, "events", frozenset(_as_iterable(self.events, "events")))
        if self.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {CHANNELS}, not {self.channel!r}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {self.format!r}")
        if not self.classes or not self.classes <= set(CLASSES):
            raise ValueError(f"classes must be a non-empty subset of {CLASSES}")
        if not self.events or not self.events <= set(EVENTS):
            raise ValueError(f"events must be a non-empty subset of {EVENTS}")
        if self.review not in ("none", "required"):
            raise ValueError(f"review must be 'none' or 'required', not {self.review!r}")
        if not 0.0 <= self.min_probability <= 1.0:
            raise ValueError("min_probability must be within [0, 1]")
        if self.channel == "webhook":
            if not self.url or urlsplit(self.url).scheme not in ("https", "http"):
                raise ValueError("a webhook subscription needs an http(s) url")
        elif self.push is None:
            raise ValueError("a push subscription needs a push target")
        else:
            push_target_from_json(self.push)
        _ = self.geometry  # validate now: a bad geofence must not surface mid-routing

    @cached_property
    def geometry(self) -> BaseGeometry:
        """The validated, prepared geofence (computed once per object)."""
        # imported here: routing imports this module for the dataclasses
        from services.dispatch.routing import validate_geofence

        geometry = validate_geofence(dict(self.geofence))
        shapely.prepare(geometry)  # later covers() calls use the prepared index
        return geometry

    @cached_property
    def push_target(self) -> PushTarget | None:
        """The parsed push target (None for webhooks)."""
        return None if self.push is None else push_target_from_json(self.push)

    @property
    def endpoint(self) -> str:
        """Breaker / per-endpoint concurrency key of this subscription's receiver."""
        if self.channel == "webhook":
            assert self.url is not None  # checked in __post_init__
            return endpoint_key(self.url)
        target = self.push_target
        if isinstance(target, WebPushTarget):
            return endpoint_key(target.endpoint)
        return FCM_ENDPOINT_KEY


def _as_iterable(value: Iterable[str] | str, name: str) -> Iterable[str]:
    if isinstance(value, str):  # "gunfire" would otherwise become {"g", "u", ...}
        raise ValueError(f"{name} must be a list of strings, not a string")
    return value


@dataclass(frozen=True)
class DeliveryPlan:
    """One message to send: one subscription x one incident version (an outbox row).

    ``event`` is what *this subscriber* is told; it can differ from the incident's event
    (see :func:`services.dispatch.routing.effective_event`). ``webhook_id`` is deterministic
    in (subscription, incident, version) so every retry and replay carries the same id.
    """

    subscription_id: str
    channel: Channel
    format: Format
    endpoint: str
    incident_id: str
    version: int
    event: DeliveryEvent
    webhook_id: str
    planned_at: datetime
