"""The order of one incident's messages to one subscriber (pure).

Every (subscription, incident) pair is a small queue of outbox rows, one per incident
version (and per *generation*: see below). A CAD lives by the story of an incident in order,
so :func:`decide_pair` looks at all the rows of one pair at once and decides, given ``now``:

* **One at a time.** While any row of the pair is in flight (claimed under a live lease),
  nothing else of the pair moves: its result decides what follows.
* **Newest wins.** Of the pending rows only the newest (the *head*) is ever sent; older
  pending rows are stale and *superseded* ("collapsed into version n"): a CAD wants the
  current state, not a replay of every step it missed. Other pairs never wait for this one.
* **Never backwards.** A pending head older than a version the subscriber may already have
  received (any row with an attempt) is superseded, so a replayed dead letter cannot
  overtake a later message.
* **Nothing follows a Cancel.** Once a cancel may have reached the subscriber, every later
  row of the pair is superseded.
* **The first message is an Alert.** A head rendered for the first time is told
  ``created`` if nothing of the pair may have reached the subscriber yet in the format it
  now takes (its earlier versions were collapsed, never attempted, or sent in a format it
  has left), ``updated`` instead of ``created`` if something did, and a cancel of which
  nothing was sent before is not sent at all. A message carries the CAP references of
  *every* earlier message of the pair that may have reached the subscriber, oldest first.
* **One webhook-id, one body.** A row is rendered once, when first sent, and keeps its body.
  If the subscription's format or URL changed since, that body is no longer what the
  subscriber asked for, and its webhook-id may have gone out already: the row is superseded
  and *re-planned* as a new row of the next generation (own webhook-id, rendered afresh).

"May have reached the subscriber" means "has at least one attempt": an attempt that timed
out may well have been received, and a second ``Alert`` for one shot is worse than an
``Update`` that references a message the receiver never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class PairRow:
    """One outbox row of a (subscription, incident) pair, as the decision needs it."""

    delivery_id: int
    version: int
    event: str  # as planned; once rendered, as sent
    status: str  # pending, delivered, failed, dead, superseded
    attempts: int = 0
    next_attempt_at: datetime | None = None  # None: due
    claimed_until: datetime | None = None
    generation: int = 0
    #: (format, url) the stored body was rendered for; None while not rendered (and for push)
    rendered_as: tuple[str, str | None] | None = None
    message_ref: str | None = None  # CAP "sender,identifier,sent" of the stored body


@dataclass(frozen=True)
class Send:
    """Send row ``delivery_id`` now, as ``event``."""

    delivery_id: int
    event: str
    #: the latest version that may have reached the subscriber before (None: first message)
    previous_version: int | None = None
    #: CAP references of every earlier message that may have reached it, oldest first
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Supersede:
    delivery_id: int
    reason: str


@dataclass(frozen=True)
class Replan:
    """Supersede a rendered row whose subscription changed; plan ``version`` again as a new
    row of ``generation`` with ``event``."""

    delivery_id: int
    version: int
    event: str
    generation: int
    reason: str


@dataclass(frozen=True)
class PairDecision:
    send: Send | None = None
    supersede: tuple[Supersede, ...] = field(default=())
    replan: Replan | None = None


def _key(row: PairRow) -> tuple[int, int]:
    return row.version, row.generation


def decide_pair(
    rows: Sequence[PairRow], *, format: str, url: str | None, now: datetime
) -> PairDecision:
    """What to do with one (subscription, incident) pair now (see the module docstring).

    ``rows``: every outbox row of the pair, any status, any order. ``format`` and ``url``:
    the subscription's current ones (a webhook's; push rows are never rendered, so they do
    not matter there). Never raises.
    """
    if any(r.status == "pending" and r.claimed_until and r.claimed_until > now for r in rows):
        return PairDecision()  # in flight: its outcome decides what follows
    pending = sorted((r for r in rows if r.status == "pending"), key=_key)
    if not pending:
        return PairDecision()
    head = pending[-1]
    stale = tuple(
        Supersede(r.delivery_id, f"collapsed into version {head.version}") for r in pending[:-1]
    )
    sent_before = sorted((r for r in rows if r.attempts > 0 and r is not head), key=_key)

    def drop(reason: str) -> PairDecision:
        return PairDecision(supersede=(*stale, Supersede(head.delivery_id, reason)))

    # (an earlier generation of the head's own version is the same message in another form)
    cancel = next(
        (r for r in sent_before if r.event == "cancelled" and r.version != head.version), None
    )
    if cancel is not None:
        return drop(f"version {cancel.version} cancelled the incident for this subscriber")
    newer_sent = [r for r in sent_before if r.version > head.version]
    if newer_sent:
        return drop(f"version {newer_sent[-1].version} was sent already")
    if head.rendered_as is not None and head.rendered_as != (format, url):
        generation = 1 + max(r.generation for r in rows if r.version == head.version)
        reason = "the subscription's format or URL changed: re-planned as a new message"
        return PairDecision(
            supersede=stale,
            replan=Replan(head.delivery_id, head.version, head.event, generation, reason),
        )
    if head.next_attempt_at is not None and head.next_attempt_at > now:
        return PairDecision(supersede=stale)
    if head.rendered_as is not None:
        # a retry: the stored body is sent as it is (its event, references are inside it)
        return PairDecision(send=Send(head.delivery_id, head.event), supersede=stale)
    # What the subscriber may have received in the form it now takes: a message rendered in
    # another format (before a format change) is not part of the story its new parser reads.
    reached = [r for r in sent_before if r.rendered_as is None or r.rendered_as[0] == format]
    event = head.event
    if not reached:
        if event == "cancelled":
            return drop("nothing was sent before the cancel")
        event = "created"
    elif event == "created":
        event = "updated"
    references = tuple(r.message_ref for r in reached if r.message_ref)
    older = [r.version for r in reached if r.version < head.version]
    previous = older[-1] if older else None
    return PairDecision(send=Send(head.delivery_id, event, previous, references), supersede=stale)
