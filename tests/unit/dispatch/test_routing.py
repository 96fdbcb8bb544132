"""Routing: which subscriptions get an incident version, told as which event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.dispatch.routing import (
    Told,
    delivery_event,
    route,
    same_shot,
    validate_geofence,
)
from services.dispatch.signing import webhook_id
from tests.unit.dispatch.factories import (
    LAT,
    LON,
    SHOT,
    SQUARE,
    make_incident,
    make_subscription,
)

NOW = datetime(2026, 11, 25, 1, 2, 5, tzinfo=UTC)


def ring(lon0: float, lat0: float, lon1: float, lat1: float) -> list[list[float]]:
    """A closed rectangle ring, counter-clockwise, GeoJSON [lon, lat]."""
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


# the incident sits in the middle of a hole of this polygon
WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [
        ring(LON - 0.01, LAT - 0.01, LON + 0.01, LAT + 0.01),
        ring(LON - 0.001, LAT - 0.001, LON + 0.001, LAT + 0.001),
    ],
}
# two separate squares; the incident is in the second
MULTI = {
    "type": "MultiPolygon",
    "coordinates": [
        [ring(LON - 0.1, LAT - 0.1, LON - 0.05, LAT - 0.05)],
        [ring(LON - 0.001, LAT - 0.001, LON + 0.001, LAT + 0.001)],
    ],
}
MULTI_MISS = {"type": "MultiPolygon", "coordinates": [MULTI["coordinates"][0]]}
# the same square with each position written [lat, lon] by mistake: nowhere near Pittsburgh
SWAPPED = {
    "type": "Polygon",
    "coordinates": [[[lat, lon] for lon, lat in SQUARE["coordinates"][0]]],
}
# the incident lies exactly on the western edge of this square
EDGE = {"type": "Polygon", "coordinates": [ring(LON, LAT - 0.001, LON + 0.002, LAT + 0.001)]}


@pytest.mark.parametrize(
    ("sub", "inc", "routed"),
    [
        # inside the square, every filter open: delivered
        ({}, {}, True),
        # 0.1 degree further north: outside the square
        ({}, {"lat": LAT + 0.1}, False),
        # point on the boundary counts as inside
        ({"geofence": EDGE}, {}, True),
        # inside the outer ring but in the hole: outside
        ({"geofence": WITH_HOLE}, {}, False),
        # between the outer ring and the hole: inside
        ({"geofence": WITH_HOLE}, {"lat": LAT + 0.005}, True),
        # multipolygon: inside its second polygon
        ({"geofence": MULTI}, {}, True),
        # multipolygon whose only polygon is elsewhere
        ({"geofence": MULTI_MISS}, {}, False),
        # positions given [lat, lon]: the fence is off the coast of Antarctica, no match
        ({"geofence": SWAPPED}, {}, False),
        # class filter: subscriber wants gunfire only, incident is fireworks
        ({"classes": ["gunfire"]}, {"classification": "fireworks"}, False),
        # class filter: probable_gunfire accepted
        (
            {"classes": ["gunfire", "probable_gunfire"]},
            {"classification": "probable_gunfire"},
            True,
        ),
        # min probability: exactly at the threshold is enough
        ({"min_probability": 0.8}, {"gunfire_probability": 0.8}, True),
        # min probability: just below
        ({"min_probability": 0.8}, {"gunfire_probability": 0.79}, False),
        # event types: subscriber does not want updates
        ({"events": ["created"]}, {"event": "updated", "version": 2}, False),
        # event types: subscriber wants cancellations
        ({"events": ["cancelled"]}, {"event": "cancelled", "version": 3}, True),
        # disabled subscription: never
        ({"enabled": False}, {}, False),
    ],
)
def test_route_table(sub: dict[str, Any], inc: dict[str, Any], routed: bool) -> None:
    plans = route(make_incident(**inc), [make_subscription(**sub)], NOW)
    assert (len(plans) == 1) is routed


def test_route_keeps_order_and_fills_the_plan() -> None:
    subs = [
        make_subscription(subscription_id="sub_b"),
        make_subscription(subscription_id="sub_far", geofence=MULTI_MISS),
        make_subscription(
            subscription_id="sub_a",
            channel="push",
            url=None,
            push={
                "webpush": {
                    "endpoint": "https://push.example:8443/x",
                    "keys": {"p256dh": "BPk", "auth": "AA"},
                }
            },
            format="json",
        ),
    ]
    inc = make_incident(version=4, event="updated")
    plans = route(inc, subs, NOW)
    assert [p.subscription_id for p in plans] == ["sub_b", "sub_a"]
    webhook, push = plans
    assert webhook.webhook_id == webhook_id("sub_b", inc.incident_id, 4)
    assert (webhook.incident_id, webhook.version, webhook.event) == (inc.incident_id, 4, "updated")
    assert webhook.endpoint == "https://cad.city.example:443"
    assert webhook.planned_at == NOW
    assert (push.channel, push.endpoint) == ("push", "https://push.example:8443")


def test_route_upgrades_for_newcomers_and_keeps_told_subscribers() -> None:
    # v2 crossed sub_new's threshold only now; sub_old got v1 already
    inc = make_incident(version=2, event="updated", gunfire_probability=0.9)
    subs = [
        make_subscription(subscription_id="sub_old", min_probability=0.5),
        make_subscription(subscription_id="sub_new", min_probability=0.85),
    ]
    plans = route(inc, subs, NOW, notified={"sub_old"})
    assert {p.subscription_id: p.event for p in plans} == {
        "sub_old": "updated",
        "sub_new": "created",
    }


# delivery_event(incident event, already notified?, incident matches the filters?, wanted events)
ALL = ["created", "updated", "cancelled"]


@pytest.mark.parametrize(
    ("event", "notified", "matching", "wanted", "told"),
    [
        # first version, matches: created
        ("created", False, True, ALL, "created"),
        # first version, does not match: nothing
        ("created", False, False, ALL, None),
        # crossed the threshold / moved into the fence only in this update: created for them
        ("updated", False, True, ALL, "created"),
        # ... and delivered even if they subscribed to "created" only
        ("updated", False, True, ["created"], "created"),
        # an update they would not have matched and were never told about: nothing
        ("updated", False, False, ALL, None),
        # told before, still matching: updated
        ("updated", True, True, ALL, "updated"),
        # told before, no longer of a class they asked for: the alert is withdrawn for them
        ("updated", True, False, ALL, "cancelled"),
        # ... unless they do not take cancels
        ("updated", True, False, ["created", "updated"], None),
        # told before, but they do not want updates
        ("updated", True, True, ["created", "cancelled"], None),
        # cancel of an incident they were told about, even if it no longer matches
        ("cancelled", True, False, ALL, "cancelled"),
        # cancel of an incident they never heard of: nothing to withdraw
        ("cancelled", False, True, ALL, None),
        # unknown history: the incident's own event, filters decide
        ("updated", None, True, ALL, "updated"),
        ("updated", None, False, ALL, None),
        ("cancelled", None, True, ALL, "cancelled"),
    ],
)
def test_delivery_event_table(
    event: str, notified: bool | None, matching: bool, wanted: list[str], told: str | None
) -> None:
    inc = make_incident(event=event, version=1 if event == "created" else 2)
    sub = make_subscription(events=wanted, classes=["gunfire"] if matching else ["fireworks"])
    assert delivery_event(inc, sub, notified) == told


# delivery_event with what the subscriber was told before (Told): incident v2 (updated) of
# class `now` at `where`, to a subscriber of `classes` / min probability 0.5 last told of
# class `told_class` (cancelled: a cancel was planned to it)
INSIDE, OUTSIDE = (LAT, LON), (LAT + 1.0, LON)


@pytest.mark.parametrize(
    ("told_class", "cancelled", "now", "probability", "where", "classes", "expected"),
    [
        # gunfire, still gunfire: an update
        ("gunfire", False, "gunfire", 0.9, INSIDE, ["gunfire"], "updated"),
        # gunfire -> probable gunfire: still an alert as gunfire, an update
        (
            "gunfire",
            False,
            "probable_gunfire",
            0.6,
            INSIDE,
            ["gunfire", "probable_gunfire"],
            "updated",
        ),
        # gunfire -> fireworks, a class they did not ask for: withdrawn (cancelled)
        ("gunfire", False, "fireworks", 0.1, INSIDE, ["gunfire"], "cancelled"),
        # ... even after it moved out of their area
        ("gunfire", False, "fireworks", 0.1, OUTSIDE, ["gunfire"], "cancelled"),
        # gunfire -> fireworks, which they also take: downgraded, not a quiet update
        ("gunfire", False, "fireworks", 0.1, INSIDE, ["gunfire", "fireworks"], "downgraded"),
        # ... also outside their area now (sticky, like every update)
        ("gunfire", False, "fireworks", 0.1, OUTSIDE, ["gunfire", "fireworks"], "downgraded"),
        # told of fireworks already (the downgrade went out): further updates are updates
        ("fireworks", False, "fireworks", 0.1, INSIDE, ["gunfire", "fireworks"], "updated"),
        # probability below their minimum, class still wanted: an update, not a cancel
        ("gunfire", False, "gunfire", 0.3, INSIDE, ["gunfire"], "updated"),
        # moved out of their area: an update (they were sent there)
        ("gunfire", False, "gunfire", 0.9, OUTSIDE, ["gunfire"], "updated"),
        # nothing follows a cancel, whatever the incident does
        ("gunfire", True, "gunfire", 0.9, INSIDE, ["gunfire"], None),
        ("gunfire", True, "fireworks", 0.1, INSIDE, ["gunfire"], None),
    ],
)
def test_delivery_event_after_being_told_table(
    told_class: str,
    cancelled: bool,
    now: str,
    probability: float,
    where: tuple[float, float],
    classes: list[str],
    expected: str | None,
) -> None:
    inc = make_incident(
        event="updated",
        version=2,
        classification=now,
        gunfire_probability=probability,
        lat=where[0],
        lon=where[1],
    )
    sub = make_subscription(classes=classes, min_probability=0.5)
    told = Told(classification=told_class, cancelled=cancelled)
    assert delivery_event(inc, sub, True, told) == expected
    # the planner passes it as the notified mapping
    plans = route(inc, [sub], NOW, notified={sub.subscription_id: told})
    assert [p.event for p in plans] == ([expected] if expected else [])


def test_a_downgrade_is_told_to_who_takes_updates() -> None:
    inc = make_incident(
        event="updated", version=2, classification="fireworks", gunfire_probability=0.1
    )
    sub = make_subscription(classes=["gunfire", "fireworks"], events=["created", "cancelled"])
    assert delivery_event(inc, sub, True, Told("gunfire")) is None


def test_disabled_subscription_is_never_told_even_a_cancel() -> None:
    inc = make_incident(event="cancelled", version=2)
    assert delivery_event(inc, make_subscription(enabled=False), True) is None


# --- geofence validation -------------------------------------------------------------------

BOWTIE = {
    "type": "Polygon",
    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
}


@pytest.mark.parametrize(
    ("geojson", "problem"),
    [
        # a Point is not an area
        ({"type": "Point", "coordinates": [LON, LAT]}, "type must be Polygon or MultiPolygon"),
        # a Feature wrapper instead of a geometry
        ({"type": "Feature", "geometry": SQUARE}, "type must be Polygon or MultiPolygon"),
        # not an object at all
        ([1, 2], "GeoJSON geometry object"),
        # open ring (last position != first)
        (
            {"type": "Polygon", "coordinates": [[*SQUARE["coordinates"][0][:-1], [LON, LAT]]]},
            "not closed",
        ),
        # three positions cannot make a ring
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}, "at least 4"),
        # self-intersecting bow-tie, with the location of the crossing
        (BOWTIE, "Self-intersection at lon 0.5, lat 0.5"),
        # latitude beyond the pole (typical of [lat, lon] written with lon > 90)
        ({"type": "Polygon", "coordinates": [ring(10, 95, 11, 96)]}, "latitude 95.0 out of range"),
        # longitude beyond 180
        ({"type": "Polygon", "coordinates": [ring(181, 0, 182, 1)]}, "longitude 181.0"),
        # strings instead of numbers
        (
            {"type": "Polygon", "coordinates": [[["0", "0"], [1, 0], [1, 1], ["0", "0"]]]},
            "must be numbers",
        ),
        # empty polygon list
        ({"type": "MultiPolygon", "coordinates": []}, "non-empty list of polygons"),
        # problems inside a multipolygon name the polygon
        (
            {"type": "MultiPolygon", "coordinates": [[ring(0, 0, 1, 1)], [[[0, 0], [1, 1]]]]},
            "polygon 1",
        ),
        # all positions on a line: a degenerate ring
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]},
            "invalid Polygon: Self-intersection",
        ),
    ],
)
def test_validate_geofence_names_the_problem(geojson: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_geofence(geojson)


def test_validate_geofence_accepts_polygon_hole_and_multipolygon() -> None:
    assert validate_geofence(SQUARE).area > 0
    hole = validate_geofence(WITH_HOLE)
    assert len(hole.interiors) == 1
    assert len(validate_geofence(MULTI).geoms) == 2


def test_subscription_refuses_an_invalid_geofence_at_construction() -> None:
    with pytest.raises(ValueError, match="Self-intersection"):
        make_subscription(geofence=BOWTIE)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        # unknown class
        ({"classes": ["gunshot"]}, "classes"),
        # a bare string would be taken as letters
        ({"classes": "gunfire"}, "not a string"),
        # unknown event
        ({"events": ["deleted"]}, "events"),
        # probability out of range
        ({"min_probability": 1.5}, "min_probability"),
        # webhook without url
        ({"url": None}, "url"),
        # unknown format
        ({"format": "xml"}, "format"),
        # push without a target
        ({"channel": "push", "url": None}, "push target"),
        # push with a broken target
        ({"channel": "push", "url": None, "push": {"fcm": {}}}, "token"),
    ],
)
def test_subscription_validation(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_subscription(**changes)


#: 0.001 degree of latitude is 111 m; the factory's incident has rounds SHOT .. SHOT+0.8 s
#: and a 95 % radius of 18.5 m.
M_PER_DEG_LAT = 111_195.0


def _other_zone(**changes: Any):  # type: ignore[no-untyped-def]
    return make_incident(incident_id="pgh-west:0b1c2d3e4f", zone="pgh-west", **changes)


@pytest.mark.parametrize(
    ("other", "same"),
    [
        # both zones located the same burst 10 m apart: one shot
        (_other_zone(lat=LAT + 10 / M_PER_DEG_LAT), True),
        # the same place and time, but the same zone: the locator merges its own rounds, and
        # two incidents of one zone are two shots (e.g. two shooters it told apart)
        (make_incident(incident_id="pgh-east:other"), False),
        # 90 m apart (within the 100 m floor): one shot
        (_other_zone(lat=LAT + 90 / M_PER_DEG_LAT), True),
        # 150 m apart with radii of 18.5 m each: two shots
        (_other_zone(lat=LAT + 150 / M_PER_DEG_LAT), False),
        # 150 m apart, but at the edge of its array the other zone's radius is 140 m:
        # 18.5 + 140 >= 150, the estimates are consistent with one source
        (_other_zone(lat=LAT + 150 / M_PER_DEG_LAT, radius95_m=140.0), True),
        # the other zone heard only the last round (0.8 s in): still overlapping
        (_other_zone(shot_time=SHOT + timedelta(seconds=0.8)), True),
        # it started 1.5 s after our last round: beyond the 1 s slack, a later shot
        (
            _other_zone(
                shot_time=SHOT + timedelta(seconds=2.3),
                last_shot_time=SHOT + timedelta(seconds=2.5),
            ),
            False,
        ),
        # its rounds ended 0.9 s before ours began: within the slack (a round one zone missed)
        (
            _other_zone(
                shot_time=SHOT - timedelta(seconds=1.5),
                last_shot_time=SHOT - timedelta(seconds=0.9),
            ),
            True,
        ),
        # a minute later at the same place: a new shot, alerted again
        (
            _other_zone(
                shot_time=SHOT + timedelta(seconds=60),
                last_shot_time=SHOT + timedelta(seconds=61),
            ),
            False,
        ),
    ],
)
def test_same_shot_links_only_another_zones_incident_close_in_time_and_place(
    other: Any, same: bool
) -> None:
    ours = make_incident()
    assert same_shot(ours, other, window_s=1.0, distance_m=100.0) is same
    assert same_shot(other, ours, window_s=1.0, distance_m=100.0) is same  # symmetric
