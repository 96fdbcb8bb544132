"""decide_pair: one subscriber's messages about one incident go out in order, collapsed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.ordering import PairDecision, PairRow, Replan, Send, Supersede, decide_pair

NOW = datetime(2026, 12, 8, 0, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=30)
EARLIER = NOW - timedelta(seconds=30)
JSON = ("json", "https://cad.example/hook")


def row(delivery_id: int, version: int, event: str, status: str = "pending", **kw) -> PairRow:  # type: ignore[no-untyped-def]
    return PairRow(delivery_id, version, event, status, **kw)


def sent(delivery_id: int, version: int, event: str, status: str = "delivered", **kw) -> PairRow:  # type: ignore[no-untyped-def]
    """A row rendered as JSON for the current URL, with one attempt."""
    kw.setdefault("attempts", 1)
    kw.setdefault("rendered_as", JSON)
    kw.setdefault("message_ref", f"s,id{delivery_id},t{delivery_id}")
    return PairRow(delivery_id, version, event, status, **kw)


CASES = [
    # --- the first message -------------------------------------------------------------------
    # a lone created version: sent as it is
    ([row(1, 1, "created")], PairDecision(send=Send(1, "created"))),
    # first message at version 3 (earlier ones never matched): told created, no references
    ([row(3, 3, "updated")], PairDecision(send=Send(3, "created"))),
    # a cancel of which nothing was sent before is not sent at all
    (
        [row(2, 2, "cancelled")],
        PairDecision(supersede=(Supersede(2, "nothing was sent before the cancel"),)),
    ),
    # --- one at a time -----------------------------------------------------------------------
    # v1 in flight (live lease): v2 waits, nothing is decided
    ([row(1, 1, "created", claimed_until=LATER), row(2, 2, "updated")], PairDecision()),
    # v1's lease ran out (its worker died): v2 collapses it and goes out as the first message
    (
        [row(1, 1, "created", claimed_until=EARLIER), row(2, 2, "updated")],
        PairDecision(
            send=Send(2, "created"), supersede=(Supersede(1, "collapsed into version 2"),)
        ),
    ),
    # --- after an acknowledgement or a give-up -----------------------------------------------
    # v1 delivered: v2 is an update referencing v1
    (
        [sent(1, 1, "created"), row(2, 2, "updated")],
        PairDecision(send=Send(2, "updated", 1, ("s,id1,t1",))),
    ),
    # v1 dead after attempts (it may have been received): v2 is still an update, referencing it
    (
        [sent(1, 1, "created", status="dead", attempts=13), row(2, 2, "updated")],
        PairDecision(send=Send(2, "updated", 1, ("s,id1,t1",))),
    ),
    # a planned "created" after something went out is an update (no second Alert)
    (
        [sent(1, 1, "created"), row(2, 2, "created")],
        PairDecision(send=Send(2, "updated", 1, ("s,id1,t1",))),
    ),
    # --- collapse ----------------------------------------------------------------------------
    # v1 retrying (attempted, in backoff), v2..v4 queued: v2, v3 and v1 collapse into v4,
    # which references every message that may have reached the subscriber (v1)
    (
        [
            sent(1, 1, "created", status="pending", next_attempt_at=LATER),
            row(2, 2, "updated"),
            row(3, 3, "updated"),
            row(4, 4, "updated"),
        ],
        PairDecision(
            send=Send(4, "updated", 1, ("s,id1,t1",)),
            supersede=(
                Supersede(1, "collapsed into version 4"),
                Supersede(2, "collapsed into version 4"),
                Supersede(3, "collapsed into version 4"),
            ),
        ),
    ),
    # every earlier message is referenced, oldest first, not only the last one
    (
        [sent(1, 1, "created"), sent(2, 2, "updated"), row(3, 3, "cancelled")],
        PairDecision(send=Send(3, "cancelled", 2, ("s,id1,t1", "s,id2,t2"))),
    ),
    # the newest is a cancel: the queued update collapses into it
    (
        [sent(1, 1, "created"), row(2, 2, "updated"), row(3, 3, "cancelled")],
        PairDecision(
            send=Send(3, "cancelled", 1, ("s,id1,t1",)),
            supersede=(Supersede(2, "collapsed into version 3"),),
        ),
    ),
    # the head is in backoff: stale rows still collapse, nothing is sent before its time
    (
        [row(1, 1, "created"), sent(2, 2, "updated", status="pending", next_attempt_at=LATER)],
        PairDecision(supersede=(Supersede(1, "collapsed into version 2"),)),
    ),
    # --- never backwards, nothing after a cancel --------------------------------------------
    # v1 replayed after v2 was delivered: v1 would arrive after v2, so it is superseded
    (
        [row(1, 1, "created", attempts=3, rendered_as=JSON), sent(2, 2, "updated")],
        PairDecision(supersede=(Supersede(1, "version 2 was sent already"),)),
    ),
    # anything after a cancel that may have been received
    (
        [sent(1, 1, "created"), sent(2, 2, "cancelled"), row(3, 3, "updated")],
        PairDecision(
            supersede=(Supersede(3, "version 2 cancelled the incident for this subscriber"),)
        ),
    ),
    # --- one webhook-id, one body ------------------------------------------------------------
    # a retry of a rendered row: sent as stored (its event is inside the body)
    (
        [sent(1, 1, "created", status="pending")],
        PairDecision(send=Send(1, "created")),
    ),
    # rendered as JSON, the subscription is now CAP: re-planned as generation 1
    (
        [sent(1, 1, "created", status="pending", rendered_as=("cap", JSON[1]))],
        PairDecision(
            replan=Replan(
                1,
                1,
                "created",
                1,
                "the subscription's format or URL changed: re-planned as a new message",
            )
        ),
    ),
    # the re-planned row (generation 1) of version 2, whose CAP message may have arrived,
    # now that the subscription is back on JSON: an update (not a second Alert) after the
    # JSON v1; the CAP message is not part of the story a JSON receiver reads
    (
        [
            sent(1, 1, "created"),
            sent(2, 2, "updated", status="superseded", rendered_as=("cap", JSON[1])),
            row(3, 2, "updated", generation=1),
        ],
        PairDecision(send=Send(3, "updated", 1, ("s,id1,t1",))),
    ),
    # re-planned after a switch from JSON to CAP: the first CAP message is an Alert
    (
        [
            sent(1, 1, "created", status="superseded", rendered_as=("cap", JSON[1])),
            row(2, 1, "created", generation=1),
        ],
        PairDecision(send=Send(2, "created")),
    ),
    # --- nothing to do -----------------------------------------------------------------------
    ([sent(1, 1, "created")], PairDecision()),
    ([], PairDecision()),
]


@pytest.mark.parametrize(("rows", "expected"), CASES)
def test_decide_pair_table(rows: list[PairRow], expected: PairDecision) -> None:
    assert decide_pair(rows, format="json", url=JSON[1], now=NOW) == expected


def test_row_order_does_not_matter() -> None:
    rows = [row(4, 4, "updated"), sent(1, 1, "created"), row(2, 2, "updated")]
    assert decide_pair(rows, format="json", url=JSON[1], now=NOW) == decide_pair(
        list(reversed(rows)), format="json", url=JSON[1], now=NOW
    )
