"""Review decisions (services.dispatch.review), as tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch import review
from shared.schemas import IncidentLocation, IncidentRecord, IncidentReview

T0 = datetime(2026, 7, 4, 21, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def record(**changes: object) -> IncidentRecord:
    base = IncidentRecord(
        incident_id="inc-1",
        version=1,
        event="created",
        zone="z1",
        classification="gunfire",
        gunfire_probability=0.95,
        rounds=3,
        shot_time=T0,
        last_shot_time=T0 + S,
        location=IncidentLocation(lat=40.44, lon=-79.99, radius95_m=20),
        sensor_count=4,
        first_detection_received_at=T0 + S,
        published_at=T0 + 2 * S,
    )
    return base.model_copy(update=changes)


def reviewed(status: str) -> IncidentReview:
    """A review as stored on a version published at T0 + 2 s (the deadline's own marker
    when ``status`` is ``unreviewed``)."""
    return IncidentReview(
        status=status,  # type: ignore[arg-type]
        reviewed_by=review.DEADLINE_ACTOR if status == "unreviewed" else "r",
        reason="x",
        decided_at=T0 + 2 * S,
        queued_at=T0,
        deadline_at=T0 + 30 * S,
    )


ITEM = review.QueueItem("inc-1", queued_at=T0, deadline_at=T0 + 30 * S)


@pytest.mark.parametrize(
    ("mode", "review_status", "told"),
    [
        ("none", None, True),  # the machine's alert goes out at once
        ("none", "confirmed", True),  # a confirmation is news to every CAD
        ("none", "reclassified", True),
        ("none", "rejected", True),  # the rejection is its Cancel
        ("none", "unreviewed", False),  # the deadline marker tells it nothing new
        ("required", None, False),  # held until someone (or the deadline) decides
        ("required", "confirmed", True),
        ("required", "reclassified", True),
        ("required", "rejected", True),  # routing then drops a cancel nobody was told of
        ("required", "unreviewed", True),  # fail open: the deadline passed
    ],
)
def test_who_may_be_told(mode: str, review_status: str | None, told: bool) -> None:
    rec = record(review=None if review_status is None else reviewed(review_status))
    assert review.may_tell(mode, rec) is told


@pytest.mark.parametrize(
    ("now", "decided_at", "passed"),
    [
        (T0, None, False),  # just queued
        (T0 + 29.9 * S, None, False),  # still within the deadline
        (T0 + 30 * S, None, True),  # the deadline itself counts as passed
        (T0 + 300 * S, None, True),
        (T0 + 300 * S, T0 + 5 * S, False),  # decided in time: nothing to do
        (T0 + 300 * S, T0 + 31 * S, False),  # decided (late): nothing to do either
    ],
)
def test_deadline_passed(now: datetime, decided_at: datetime | None, passed: bool) -> None:
    item = review.QueueItem("inc-1", T0, review.deadline_for(T0, 30.0), decided_at)
    assert review.deadline_passed(item, now) is passed


def test_queue_is_ordered_by_deadline_and_leaves_out_decided_items() -> None:
    items = [
        review.QueueItem("b", T0, T0 + 30 * S),
        review.QueueItem("a", T0, T0 + 30 * S),  # same deadline: by id
        review.QueueItem("c", T0, T0 + 10 * S),  # earliest deadline first
        review.QueueItem("d", T0, T0 + 1 * S, decided_at=T0),  # decided: not in the queue
    ]
    assert [i.incident_id for i in review.queue_order(items)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("decision", "kwargs", "now", "event", "status", "late", "cls", "rounds"),
    [
        # confirm: same picture, one version later, reviewed_by and reason kept
        ("confirm", {}, T0 + 5 * S, "updated", "confirmed", False, "gunfire", 3),
        # reclassify the class: the probability cannot stay that of gunfire
        (
            "reclassify",
            {"classification": "fireworks"},
            T0 + 5 * S,
            "updated",
            "reclassified",
            False,
            "fireworks",
            3,
        ),
        # reclassify the rounds only
        ("reclassify", {"rounds": 5}, T0 + 5 * S, "updated", "reclassified", False, "gunfire", 5),
        # reject: a Cancel
        ("reject", {}, T0 + 5 * S, "cancelled", "rejected", False, "gunfire", 3),
        # after the deadline the decision still counts, recorded late
        ("confirm", {}, T0 + 31 * S, "updated", "confirmed", True, "gunfire", 3),
        ("reject", {}, T0 + 31 * S, "cancelled", "rejected", True, "gunfire", 3),
        # the deadline marker itself is never late
        ("unreviewed", {}, T0 + 31 * S, "updated", "unreviewed", False, "gunfire", 3),
    ],
)
def test_decided_version(
    decision: str,
    kwargs: dict,
    now: datetime,
    event: str,
    status: str,
    late: bool,
    cls: str,
    rounds: int,
) -> None:
    out = review.decided_version(
        record(), decision, reviewed_by="ana", reason="heard it", item=ITEM, now=now, **kwargs
    )  # type: ignore[arg-type]
    assert (out.version, out.event, out.classification, out.rounds) == (2, event, cls, rounds)
    assert out.review is not None
    assert (out.review.status, out.review.late) == (status, late)
    assert (out.review.reviewed_by, out.review.reason, out.review.decided_at) == (
        "ana",
        "heard it",
        now,
    )
    if cls != "gunfire":
        assert out.gunfire_probability <= 0.5


@pytest.mark.parametrize(
    ("current", "decision", "kwargs", "message"),
    [
        (record(event="cancelled"), "confirm", {}, "cancelled already"),  # nothing left
        (record(), "reclassify", {}, "needs a classification or rounds"),
        (record(), "reclassify", {"classification": "gunfire", "rounds": 3}, "changes nothing"),
        (record(), "maybe", {}, "decision must be one of"),
    ],
)
def test_decisions_that_make_no_sense(
    current: IncidentRecord, decision: str, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        review.decided_version(
            current, decision, reviewed_by="ana", reason="r", item=ITEM, now=T0, **kwargs
        )  # type: ignore[arg-type]


CONFIRMED = review.decided_version(
    record(), "confirm", reviewed_by="ana", reason="r", item=ITEM, now=T0 + 5 * S
)
RECLASSIFIED = review.decided_version(
    record(), "reclassify", reviewed_by="ana", reason="r", item=ITEM, now=T0 + 5 * S,
    classification="fireworks",
)  # fmt: skip
REJECTED = review.decided_version(
    record(), "reject", reviewed_by="ana", reason="r", item=ITEM, now=T0 + 5 * S
)
MARKER = review.decided_version(
    record(), "unreviewed", reviewed_by=review.DEADLINE_ACTOR, reason="deadline", item=ITEM,
    now=T0 + 30 * S,
)  # fmt: skip


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        # no decision stands: an ordinary duplicate, nothing to carry over
        (record(), record(), None),
        # the locator's v2 collides with the reviewer's v2: stored as v3, confirmation kept
        (CONFIRMED, record(version=2, event="updated", rounds=4),
         {"version": 3, "event": "updated", "rounds": 4, "classification": "gunfire",
          "status": "confirmed"}),
        # a reviewer's class stands against the machine's; rounds take the larger count
        (RECLASSIFIED, record(version=2, event="updated", rounds=2),
         {"version": 3, "event": "updated", "rounds": 3, "classification": "fireworks",
          "status": "reclassified"}),
        # after the deadline marker the machine's update carries "unreviewed" over
        (MARKER, record(version=2, event="updated", rounds=5),
         {"version": 3, "event": "updated", "rounds": 5, "classification": "gunfire",
          "status": "unreviewed"}),
        # a machine cancel after a confirmation is still a cancel
        (CONFIRMED, record(version=2, event="cancelled"),
         {"version": 3, "event": "cancelled", "rounds": 3, "classification": "gunfire",
          "status": "confirmed"}),
        # a rejection stands: the machine's later picture does not revive the incident
        (REJECTED, record(version=2, event="updated", rounds=4), None),
    ],
)  # fmt: skip
def test_a_machine_version_after_a_decision_is_stored_after_it(
    current: IncidentRecord, incoming: IncidentRecord, expected: dict | None
) -> None:
    got = review.carry_over(current, incoming)
    if expected is None:
        assert got is None
        return
    assert got is not None and got.review is not None
    assert {
        "version": got.version,
        "event": got.event,
        "rounds": got.rounds,
        "classification": got.classification,
        "status": got.review.status,
    } == expected


@pytest.mark.parametrize(
    ("version", "marker"),
    [
        (MARKER, True),  # the deadline's own version: no news to a non-reviewing CAD
        (review.carry_over(MARKER, record(version=2, event="updated", rounds=5)), False),
        (CONFIRMED, False),
        (record(), False),
    ],
)
def test_the_deadline_marker_is_only_the_deadlines_own_version(
    version: IncidentRecord, marker: bool
) -> None:
    assert review.is_deadline_marker(version) is marker
    assert review.may_tell("none", version) is not marker
