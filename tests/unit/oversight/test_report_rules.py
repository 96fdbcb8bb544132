"""The report's small rules, each a table of cases with the reason in a comment."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from services.oversight.report import (
    Alert,
    Inputs,
    Params,
    build_report,
    coarse_cell,
    one_per_shot,
    percentile,
    week_start,
    wilson,
)

T0 = datetime(2026, 11, 3, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),  # no values: no figure, not zero
        ([7.0], 99, 7.0),  # one value is every percentile
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # rank ceil(0.5 * 4) = 2, no interpolation
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # order of the input does not matter
        ([1.0, 2.0, 3.0, 4.0, 5.0], 90, 5.0),  # rank ceil(4.5) = 5
        ([float(i) for i in range(1, 101)], 99, 99.0),  # rank 99 of 100
        ([1.0, 2.0], 0, 1.0),  # rank is at least 1
    ],
)
def test_percentiles_are_nearest_rank(values, p, expected):
    assert percentile(values, p) == expected


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        (0, 0, None, None),  # nothing to estimate
        (2, 4, 0.1500, 0.8500),  # by hand: centre 0.5, half-width 0.35
        (0, 10, 0.0, 0.2775),  # none located still has an upper bound (not 0)
        (10, 10, 0.7225, 1.0),  # all located still has a lower bound (not 1)
    ],
)
def test_the_wilson_interval(k, n, low, high):
    got = wilson(k, n)
    if low is None:
        assert got == (None, None)
    else:
        assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)


def test_a_grid_cell_is_fixed_and_holds_its_points():
    lat, lon = 40.4406, -79.9959
    cell = coarse_cell(lat, lon, 250.0)
    # the same point always lands in the same cell, and a point 10 m away in the same one
    assert coarse_cell(lat, lon, 250.0) == cell
    assert coarse_cell(lat + 10 / 111_320, lon, 250.0) == cell
    # the centre is within half a cell of the point (125 m north-south)
    assert abs(cell[0] - lat) * 111_320 <= 125.0 + 1e-6
    # a point 300 m north is in another cell
    assert coarse_cell(lat + 300 / 111_320, lon, 250.0) != cell


@pytest.mark.parametrize(
    ("day", "monday"),
    [
        (date(2026, 11, 1), date(2026, 10, 26)),  # a Sunday belongs to the week before
        (date(2026, 11, 2), date(2026, 11, 2)),  # a Monday starts its week
        (date(2026, 11, 8), date(2026, 11, 2)),
    ],
)
def test_weeks_start_on_monday(day, monday):
    assert week_start(day) == monday


def _alert(incident_id: str, siblings: tuple[str, ...] = (), **kw) -> Alert:
    values = dict(
        incident_id=incident_id,
        zone="z1",
        classification="gunfire",
        first_classification="gunfire",
        event="created",
        rounds=1,
        shot_time=T0,
        lat=40.44,
        lon=-79.99,
        same_shot_as=siblings,
    )
    values.update(kw)
    return Alert(**values)


def test_one_shot_heard_in_two_zones_counts_once_by_its_smallest_id():
    a, b = _alert("a", ("b",)), _alert("b", ("a",))
    lone = _alert("c", ("x",))  # its sibling is not an alert of the period: it counts
    assert [x.incident_id for x in one_per_shot([b, a, lone])] == ["a", "c"]


def test_the_period_is_from_midnight_to_midnight_after_the_last_day():
    params = Params(start=date(2026, 11, 1), end=date(2026, 11, 30))
    inside = [
        _alert("first", shot_time=datetime(2026, 11, 1, tzinfo=UTC)),
        _alert("last", shot_time=datetime(2026, 12, 1, tzinfo=UTC) - timedelta(microseconds=1)),
    ]
    outside = [
        _alert("before", shot_time=datetime(2026, 11, 1, tzinfo=UTC) - timedelta(microseconds=1)),
        _alert("after", shot_time=datetime(2026, 12, 1, tzinfo=UTC)),
    ]
    report = build_report(Inputs(alerts=inside + outside), params, version="t")
    assert report["figures"]["1_alerts"]["by_class"]["rows"][-1][1] == 2


def test_an_empty_period_still_reports_every_table_with_none_for_shares():
    report = build_report(
        Inputs(alerts=[]), Params(start=date(2026, 1, 1), end=date(2026, 1, 31)), version="t"
    )
    assert report["figures"]["2_linkage"]["linkage"]["rows"][0] == ["any outcome recorded", 0, None]
    assert report["figures"]["5_verified_shootings"]["contract_rate"]["rows"] == [
        [0, 0, None, None, None]
    ]


def test_an_empty_report_still_renders_every_file(tmp_path):
    from services.oversight.render import write_report

    report = build_report(
        Inputs(alerts=[]), Params(start=date(2026, 1, 1), end=date(2026, 1, 31)), version="t"
    )
    written = write_report(report, tmp_path)
    html = written["report.html"].read_text()
    assert html.count('<svg class="chart"') == 4
    assert "no alerts in the period" in html
    assert written["1_alerts__by_week.csv"].read_text().splitlines()[0] == (
        "week_of,gunfire,probable_gunfire,fireworks,other,all"
    )
