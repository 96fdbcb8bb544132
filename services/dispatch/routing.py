"""Who gets told what about an incident version (pure).

:func:`route` picks, for one incident version, the subscriptions to deliver to and the event
each of them is told (:func:`delivery_event`); :func:`same_shot` tells two zones' incidents
of one shot apart from two shots. :func:`validate_geofence` checks a GeoJSON
geofence for the admin API (and for :class:`~services.dispatch.model.Subscription`).

GeoJSON positions are ``[longitude, latitude]`` - the opposite of how people say them. A
point on a geofence's edge counts as inside (an alert on the boundary street is wanted).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from numbers import Real
from typing import Any

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from services.dispatch.model import DeliveryEvent, DeliveryPlan, Subscription
from services.dispatch.review import may_tell
from services.dispatch.signing import webhook_id
from shared.geo import haversine_m
from shared.schemas import IncidentRecord

GEOFENCE_TYPES = ("Polygon", "MultiPolygon")
#: The classes an alert as gunfire was about; leaving them is a downgrade.
GUNFIRE_CLASSES = frozenset({"gunfire", "probable_gunfire"})


@dataclass(frozen=True)
class Told:
    """What one subscriber was planned about an incident before (from the outbox)."""

    classification: str  # of the latest version planned to it
    cancelled: bool = False  # a cancel was planned to it (and not superseded unsent)


def _check_position(position: Any, where: str) -> tuple[float, float]:
    if not isinstance(position, list | tuple) or len(position) not in (2, 3):
        raise ValueError(f"{where}: a position is [longitude, latitude] (optionally altitude)")
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in position):
        raise ValueError(f"{where}: coordinates must be numbers")
    lon, lat = float(position[0]), float(position[1])
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"{where}: longitude {lon} out of range [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(
            f"{where}: latitude {lat} out of range [-90, 90] "
            "(GeoJSON order is [longitude, latitude])"
        )
    return lon, lat


def _check_polygon(rings: Any, where: str) -> None:
    if not isinstance(rings, list | tuple) or not rings:
        raise ValueError(f"{where}: a polygon is a non-empty list of linear rings")
    for r, ring in enumerate(rings):
        ring_where = f"{where} ring {r}" if r else f"{where} exterior ring"
        if not isinstance(ring, list | tuple) or len(ring) < 4:
            raise ValueError(f"{ring_where}: a linear ring needs at least 4 positions")
        points = [_check_position(p, f"{ring_where} position {i}") for i, p in enumerate(ring)]
        # shapely would silently close an open ring; GeoJSON (RFC 7946 3.1.6) requires it
        if points[0] != points[-1]:
            raise ValueError(f"{ring_where} is not closed: the last position must equal the first")


def validate_geofence(geojson: dict[str, Any]) -> BaseGeometry:
    """The shapely geometry of a GeoJSON Polygon or MultiPolygon geometry object.

    Raises ``ValueError`` naming the problem: not an object, wrong ``type``, malformed
    coordinates, longitude/latitude out of range, unclosed ring, fewer than 4 positions in a
    ring, self-intersection (with its location), zero area. Pure; does not prepare the
    geometry (the caller may, with ``shapely.prepare``).
    """
    if not isinstance(geojson, dict):
        raise ValueError("the geofence must be a GeoJSON geometry object")
    kind = geojson.get("type")
    if kind not in GEOFENCE_TYPES:
        raise ValueError(f"geofence type must be Polygon or MultiPolygon, not {kind!r}")
    coords = geojson.get("coordinates")
    if kind == "Polygon":
        _check_polygon(coords, "polygon")
    else:
        if not isinstance(coords, list | tuple) or not coords:
            raise ValueError("a MultiPolygon is a non-empty list of polygons")
        for p, rings in enumerate(coords):
            _check_polygon(rings, f"polygon {p}")
    geometry = shape({"type": kind, "coordinates": coords})
    if not geometry.is_valid:
        # e.g. "Self-intersection[-79.99 40.44]": shapely reports x y, i.e. lon lat
        reason, _, where = explain_validity(geometry).partition("[")
        coords = where.rstrip("]").split()
        at = f" at lon {coords[0]}, lat {coords[1]}" if len(coords) == 2 else ""
        raise ValueError(f"invalid {kind}: {reason}{at}")
    if geometry.area <= 0.0:
        raise ValueError(f"the {kind} has zero area")
    return geometry


def delivery_event(
    incident: IncidentRecord,
    subscription: Subscription,
    already_notified: bool | None,
    told: Told | None = None,
) -> DeliveryEvent | None:
    """The event this subscriber is told about this incident version, or None (not told).

    ``already_notified``: did this subscriber get any earlier version of this incident
    (``None``: unknown - the incident's own event is used and only the filters decide).
    ``told``: what it was planned before (implies ``already_notified``).

    * An incident that newly matches (it crossed the class/probability threshold or moved
      into the geofence only in a later version) is *created* for this subscriber, even if
      the incident itself is ``updated``; a *cancel* of an incident they never heard of is
      not sent.
    * Once told, a subscriber hears every later update and the cancel even if the incident
      stops matching (moved out of the area, probability below its minimum): an officer
      sent to gunfire must learn what became of it.
    * An update whose class is no longer one the subscriber asked for is told as
      *cancelled*: for this subscriber the alert is withdrawn, explicitly, never by
      silence. (Only the class decides: a probability wavering around the subscriber's
      minimum must not cancel a gunfire alert.)
    * An update that takes an incident the subscriber was last told of as gunfire
      (:data:`GUNFIRE_CLASSES`) to another class it still asked for is *downgraded*, its own
      event, not a quiet update.
    * Nothing follows a cancel (``told.cancelled``).
    * Then the subscription's ``events`` (``downgraded`` counts as an update) and
      ``enabled`` apply.
    """
    if not subscription.enabled:
        return None
    if told is not None:
        if told.cancelled:
            return None
        already_notified = True
    event: DeliveryEvent = incident.event
    if already_notified is False:
        if event == "cancelled":
            return None
        event = "created"
    sticky = already_notified is True and event in ("updated", "cancelled")
    if already_notified is True and event == "updated":
        if incident.classification not in subscription.classes:
            event = "cancelled"
        elif (
            told is not None
            and told.classification in GUNFIRE_CLASSES
            and incident.classification not in GUNFIRE_CLASSES
        ):
            event = "downgraded"
    if not sticky and not matches(incident, subscription):
        return None
    wanted = "updated" if event == "downgraded" else event
    return event if wanted in subscription.events else None


def same_shot(a: IncidentRecord, b: IncidentRecord, *, window_s: float, distance_m: float) -> bool:
    """Do incidents ``a`` and ``b`` report the same shot(s), heard across a zone boundary?

    Each zone's locator sees only its own sensors, so a shot near a boundary that both
    zones' arrays locate becomes two incidents with different ids. They are the same shot
    when they come from different zones, their rounds overlap in time (``[shot_time,
    last_shot_time]``, widened by ``window_s``: one zone may have missed a round), and their
    locations lie within ``distance_m`` of each other, or within their two 95 % radii added
    if that is more (a boundary shot sits at the edge of both arrays, where radii are wide).
    Never the same shot within one zone: the locator itself merges rounds into updates there.
    Never a drill's incident and a real one: a real alert must not be held back as the
    sibling of an exercise (nor an exercise sent as an update of a real incident).
    """
    if a.zone == b.zone or a.exercise != b.exercise:
        return False
    slack = timedelta(seconds=window_s)
    if a.shot_time > b.last_shot_time + slack or b.shot_time > a.last_shot_time + slack:
        return False
    la, lb = a.location, b.location
    apart = float(haversine_m(la.lat, la.lon, lb.lat, lb.lon))
    return apart <= max(distance_m, la.radius95_m + lb.radius95_m)


def matches(incident: IncidentRecord, subscription: Subscription) -> bool:
    """Do the subscription's filters (geofence, classes, min probability) take this incident?"""
    if incident.classification not in subscription.classes:
        return False
    if incident.gunfire_probability < subscription.min_probability:
        return False
    loc = incident.location
    # prepared geometry (Subscription.geometry): point-in-polygon without building a Point
    return bool(shapely.intersects_xy(subscription.geometry, loc.lon, loc.lat))


def route(
    incident: IncidentRecord,
    subscriptions: Sequence[Subscription],
    now: datetime,
    *,
    notified: Mapping[str, Told] | Collection[str] | None = None,
) -> list[DeliveryPlan]:
    """The deliveries of one incident version, in the order of ``subscriptions``.

    ``notified``: the subscriptions that already got an earlier version of this incident
    (from the outbox), best as a mapping to what each was told (downgrades and "nothing
    after a cancel" need it). Pass it - without it (``None``) an ``updated`` event reaches
    only subscriptions it matches, as ``updated``, and newcomers miss the "created" upgrade
    (see :func:`delivery_event`). ``now`` stamps the plans (``planned_at``). Never raises for a
    valid ``Subscription`` (they validate themselves on construction).
    """
    plans: list[DeliveryPlan] = []
    for sub in subscriptions:
        if not may_tell(sub.review, incident):
            continue
        already = None if notified is None else sub.subscription_id in notified
        told = notified.get(sub.subscription_id) if isinstance(notified, Mapping) else None
        event = delivery_event(incident, sub, already, told)
        if event is None:
            continue
        plans.append(
            DeliveryPlan(
                subscription_id=sub.subscription_id,
                channel=sub.channel,
                format=sub.format,
                endpoint=sub.endpoint,
                incident_id=incident.incident_id,
                version=incident.version,
                event=event,
                webhook_id=webhook_id(sub.subscription_id, incident.incident_id, incident.version),
                planned_at=now,
            )
        )
    return plans
