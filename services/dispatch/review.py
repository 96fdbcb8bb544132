"""Human review of machine alerts (pure).

A subscription with ``review = "required"`` is told of an incident only once a person
decided on it, or once the review deadline passed without a decision: then the incident is
sent marked ``unreviewed`` (fail open - a reviewer's absence never silences gunfire). A
subscription with ``review = "none"`` is told at once, as the machine decided.

Each decision is a new incident version (:func:`decided_version`) carrying a
:class:`~shared.schemas.IncidentReview`: ``confirmed`` (same picture), ``reclassified``
(class and/or rounds changed by the reviewer), ``rejected`` (the incident is cancelled:
every subscriber that was told gets a Cancel) or ``unreviewed`` (the deadline passed). A
decision after the deadline is still taken, and is recorded as ``late``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from shared.schemas import IncidentRecord, IncidentReview

ReviewMode = Literal["none", "required"]
Decision = Literal["confirm", "reclassify", "reject"]
REVIEW_MODES: tuple[str, ...] = get_args(ReviewMode)
DECISIONS: tuple[str, ...] = get_args(Decision)

#: The account named on versions written when the deadline passes (no person decided).
DEADLINE_ACTOR = "shotline:review-deadline"


@dataclass(frozen=True)
class QueueItem:
    """One incident waiting for (or past) review."""

    incident_id: str
    queued_at: datetime
    deadline_at: datetime
    decided_at: datetime | None = None


def deadline_for(queued_at: datetime, deadline_s: float) -> datetime:
    return queued_at + timedelta(seconds=deadline_s)


def may_tell(mode: str, record: IncidentRecord) -> bool:
    """Whether a subscription of review ``mode`` may be told of this version at all.

    ``required`` waits for a version that carries a review (a decision, or ``unreviewed``
    once the deadline passed); ``none`` hears every version except the ``unreviewed``
    marker, which tells it nothing new.
    """
    if mode == "required":
        return record.review is not None
    return not is_deadline_marker(record)


def is_deadline_marker(record: IncidentRecord) -> bool:
    """The version written when the deadline passed (it repeats the picture; a later machine
    version that carries the ``unreviewed`` status over is news, see :func:`carry_over`)."""
    r = record.review
    return (
        r is not None
        and r.status == "unreviewed"
        and r.reviewed_by == DEADLINE_ACTOR
        and record.published_at == r.decided_at
    )


def carry_over(current: IncidentRecord, incoming: IncidentRecord) -> IncidentRecord | None:
    """A machine version that arrives after a review decision took its version number.

    The locator counts versions without knowing that dispatch stored decisions in between,
    so its next version collides with (or falls behind) a decided one. It is stored as the
    version after ``current`` instead, carrying the decision over: a reviewer's class and
    probability stand (rounds take the larger count), ``created`` becomes ``updated``.
    Returns None when nothing should be stored: no decision stands (an ordinary duplicate
    or stale version), or the incident was rejected (the reviewer's Cancel stands; a later
    machine picture does not revive it).
    """
    review = current.review
    if review is None or incoming.review is not None or current.event == "cancelled":
        return None
    changes: dict[str, object] = {"version": current.version + 1, "review": review}
    if review.status == "reclassified":
        changes["classification"] = current.classification
        changes["gunfire_probability"] = current.gunfire_probability
        changes["rounds"] = max(current.rounds, incoming.rounds)
    if incoming.event == "created":
        changes["event"] = "updated"
    return incoming.model_copy(update=changes)


def deadline_passed(item: QueueItem, now: datetime) -> bool:
    """True when ``item`` has had no decision and its deadline is reached (inclusive)."""
    return item.decided_at is None and now >= item.deadline_at


def queue_order(items: Iterable[QueueItem]) -> list[QueueItem]:
    """The reviewer's queue: undecided items, earliest deadline first (ties by id)."""
    return sorted(
        (i for i in items if i.decided_at is None), key=lambda i: (i.deadline_at, i.incident_id)
    )


def decided_version(
    current: IncidentRecord,
    decision: Decision | Literal["unreviewed"],
    *,
    reviewed_by: str,
    reason: str,
    item: QueueItem,
    now: datetime,
    classification: str | None = None,
    rounds: int | None = None,
) -> IncidentRecord:
    """The next version of ``current`` that records ``decision``.

    ``reclassify`` needs a new ``classification`` or ``rounds`` (raises ``ValueError``
    otherwise); ``reject`` makes the version a ``cancelled`` event. ``late`` is set when
    ``now`` is past the item's deadline. Raises ``ValueError`` for a decision on a cancelled
    incident (there is nothing left to decide).
    """
    if current.event == "cancelled":
        raise ValueError("the incident is cancelled already")
    if decision not in (*DECISIONS, "unreviewed"):
        raise ValueError(f"decision must be one of {DECISIONS}")
    changes: dict[str, object] = {}
    if decision == "reclassify":
        if classification is None and rounds is None:
            raise ValueError("reclassify needs a classification or rounds")
        if classification is not None:
            changes["classification"] = classification
            if classification != "gunfire":
                changes["gunfire_probability"] = min(current.gunfire_probability, 0.5)
        if rounds is not None:
            changes["rounds"] = rounds
        if (
            changes.get("classification", current.classification),
            changes.get("rounds", current.rounds),
        ) == (current.classification, current.rounds):
            raise ValueError("reclassify changes nothing: give a different class or rounds")
    status = {
        "confirm": "confirmed",
        "reclassify": "reclassified",
        "reject": "rejected",
        "unreviewed": "unreviewed",
    }[decision]
    review = IncidentReview(
        status=status,
        reviewed_by=reviewed_by,
        reason=reason,
        decided_at=now,
        late=decision != "unreviewed" and now > item.deadline_at,
        queued_at=item.queued_at,
        deadline_at=item.deadline_at,
    )
    return current.model_copy(
        update={
            **changes,
            "version": current.version + 1,
            "event": "cancelled" if decision == "reject" else "updated",
            "review": review,
            "published_at": now,
        }
    )
