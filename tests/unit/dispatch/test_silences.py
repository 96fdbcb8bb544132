"""Silence decisions (services.dispatch.silences), as tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch import silences
from tests.unit.dispatch.test_review import record

T0 = datetime(2026, 7, 4, 21, 0, tzinfo=UTC)
S = timedelta(seconds=1)
FLOOR = 0.9

#: the stadium: a square around (-79.99, 40.44), ~1 km across
STADIUM = {
    "type": "Polygon",
    "coordinates": [
        [[-80.0, 40.435], [-79.98, 40.435], [-79.98, 40.445], [-80.0, 40.445], [-80.0, 40.435]]
    ],
}


def silence(**changes: object) -> silences.Silence:
    base: dict[str, object] = {
        "silence_id": "sil-1",
        "area": STADIUM,
        "starts_at": T0,
        "ends_at": T0 + 3600 * S,
        "classes": frozenset({"fireworks"}),
    }
    base.update(changes)
    return silences.Silence(**base)  # type: ignore[arg-type]


FIREWORKS = {"classification": "fireworks", "gunfire_probability": 0.2}
AT = T0 + 600 * S


@pytest.mark.parametrize(
    ("incident", "silence_changes", "now", "held"),
    [
        # fireworks in the area during the window: held
        (FIREWORKS, {}, AT, True),
        # before the start, at the (exclusive) end, after the end: delivered
        (FIREWORKS, {}, T0 - S, False),
        (FIREWORKS, {}, T0 + 3600 * S, False),
        (FIREWORKS, {}, T0 + 7200 * S, False),
        # at the start itself: held
        (FIREWORKS, {}, T0, True),
        # expired early: delivered from the expiry on
        (FIREWORKS, {"expired_at": AT - S}, AT, False),
        (FIREWORKS, {"expired_at": AT + S}, AT, True),
        # outside the area: delivered (the city is not muted)
        (
            {**FIREWORKS, "location": record().location.model_copy(update={"lon": -79.9})},
            {},
            AT,
            False,
        ),
        # a class the silence does not name: delivered
        ({"classification": "probable_gunfire", "gunfire_probability": 0.6}, {}, AT, False),
        # a silence for every class holds low-probability gunfire ...
        ({"gunfire_probability": 0.5}, {"classes": None}, AT, True),
        # ... just below the floor too ...
        ({"gunfire_probability": FLOOR - 0.01}, {"classes": None}, AT, True),
        # ... but never gunfire at or above the floor unless it says so explicitly
        ({"gunfire_probability": FLOOR}, {"classes": None}, AT, False),
        ({"gunfire_probability": 0.99}, {"classes": None}, AT, False),
        ({"gunfire_probability": 0.99}, {"classes": None, "include_high_gunfire": True}, AT, True),
        # a cancel is never held: whoever was told must hear it is off
        ({**FIREWORKS, "event": "cancelled"}, {}, AT, False),
    ],
)
def test_silencing(incident: dict, silence_changes: dict, now: datetime, held: bool) -> None:
    got = silences.silencing(
        record(**incident), [silence(**silence_changes)], now=now, gunfire_floor=FLOOR
    )
    assert (got is not None) is held


def test_of_several_the_one_ending_last_holds() -> None:
    short, long = silence(silence_id="a"), silence(silence_id="b", ends_at=T0 + 7200 * S)
    got = silences.silencing(record(**FIREWORKS), [long, short], now=AT, gunfire_floor=FLOOR)
    assert got is long


END = T0 + 3600 * S
#: fireworks whose last round was a minute before the silence ended
LATE_SHOW = {**FIREWORKS, "shot_time": END - 61 * S, "last_shot_time": END - 60 * S}


@pytest.mark.parametrize(
    ("incident", "others", "now", "verdict"),
    [
        # the silence ended, the incident is recent: deliver
        (LATE_SHOW, [], END, None),
        # cancelled while held: nothing to send (nobody was told)
        ({**LATE_SHOW, "event": "cancelled"}, [], END, "cancelled"),
        # another silence still covers it: stays held
        (LATE_SHOW, [silence(silence_id="b", ends_at=END + 3600 * S)], END, "held"),
        # its last round is older than the relevance window: dropped as stale
        (LATE_SHOW, [], END - 60 * S + 601 * S, "stale"),
        # exactly at the relevance limit: still delivered
        (LATE_SHOW, [], END - 60 * S + 600 * S, None),
        # held since the start of the hour-long show: long past relevance at its end
        (FIREWORKS, [], END, "stale"),
    ],
)
def test_release(incident: dict, others: list, now: datetime, verdict: str | None) -> None:
    got = silences.release(
        record(**incident), others, now=now, gunfire_floor=FLOOR, relevance_s=600.0
    )
    assert got == verdict
