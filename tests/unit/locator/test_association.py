"""Association: which pulses belong to the seed's source, on constructed dirty windows.

Each test builds a window of pulses (sensor positions in metres, arrival times in seconds)
around a known source and checks which pulses :func:`associate` takes as the seed's shot.
Every specification holds on both paths of ``associate``: the compiled core (numba) and the
numpy fallback.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.locator import association, association_jit
from services.locator.association import associate, echo_shadowed, gate, heard_share
from services.locator.config import LocatorConfig
from tests.unit.locator.conftest import SENSORS, C

CFG = LocatorConfig()
SOURCE = np.array([140.0, -60.0, 4.0])


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def decision_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test through the compiled core and through the numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(association, "CORE", None)
    elif association_jit.CORE is None:
        pytest.skip("numba not installed: only the numpy path exists")
    return str(request.param)


class Window:
    """Pulses of one window; index order is arrival order (the seed is index 0)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, int, str]] = []  # (time, sensor, label)

    def shot(self, source: np.ndarray, at: float, label: str, skip=(), late=None) -> Window:
        late = late or {}
        for i, s in enumerate(SENSORS):
            if i not in skip:
                t = at + np.linalg.norm(s - source) / C + late.get(i, 0.0)
                self.rows.append((t, i, f"{label}{i}"))
        return self

    def add(self, sensor: int, t: float, label: str) -> Window:
        self.rows.append((t, sensor, label))
        return self

    def run(self, config: LocatorConfig = CFG, known: bool = True):
        self.rows.sort()
        times = np.array([r[0] for r in self.rows])
        sensors = np.array([r[1] for r in self.rows])
        labels = [r[2] for r in self.rows]
        assoc = associate(
            SENSORS[sensors], times, sensors, 0, C, config,
            known_sensors=SENSORS if known else None,
        )
        if assoc is None:
            return None, labels
        return assoc, labels

    def members(self, config: LocatorConfig = CFG) -> set[str] | None:
        assoc, labels = self.run(config)
        return None if assoc is None else {labels[i] for i in assoc.members}


ALL = {f"a{i}" for i in range(len(SENSORS))}


def test_clean_shot_takes_one_pulse_from_every_sensor() -> None:
    assoc, labels = Window().shot(SOURCE, 1.0, "a").run()
    assert {labels[i] for i in assoc.members} == ALL
    assert np.hypot(*(assoc.fix.position[:2] - SOURCE[:2])) < 0.05


def test_echo_at_a_sensor_is_not_taken_and_the_direct_pulse_is() -> None:
    # sensor 2 hears a strong reflection 80 ms after the direct pulse; sensor 5 at +0.4 s
    w = Window().shot(SOURCE, 1.0, "a")
    w.add(2, w.rows[2][0] + 0.08, "echo2").add(5, w.rows[5][0] + 0.4, "echo5")
    assert w.members() == ALL


def test_diffracted_late_arrival_is_rejected_and_reported() -> None:
    # sensor 9 hears the shot only around a building: 25 m of extra path (73 ms late)
    assoc, labels = Window().shot(SOURCE, 1.0, "a", late={9: 25 / C}).run()
    assert {labels[i] for i in assoc.members} == ALL - {"a9"}
    assert [labels[i] for i in assoc.rejected] == ["a9"]
    k = list(assoc.pulses).index(labels.index("a9"))
    assert assoc.fix.residuals_s[k] == pytest.approx(25 / C, abs=1e-3)


def test_single_sensor_noise_as_seed_is_dropped() -> None:
    # a door slam at sensor 0 well before the shot: nothing else fits it
    w = Window().shot(SOURCE, 1.0, "a").add(0, 0.2, "slam")
    assert w.members() is None


def test_bad_clock_sensor_is_rejected_from_the_shot() -> None:
    assoc, labels = Window().shot(SOURCE, 1.0, "a", late={3: 0.150}).run()
    assert {labels[i] for i in assoc.members} == ALL - {"a3"}
    assert [labels[i] for i in assoc.rejected] == ["a3"]


def test_bad_clock_seed_that_runs_early_is_dropped_not_forced_into_a_fit() -> None:
    # sensor 4's clock runs 120 ms early: its pulse is the earliest, but is no shot's first
    w = Window().shot(SOURCE, 1.0, "a", late={4: -0.120})
    assert w.rows[0][1] == 4 or sorted(w.rows)[0][1] == 4
    assert w.members() is None


def test_missed_sensors_still_locate_with_the_rest() -> None:
    assoc, labels = Window().shot(SOURCE, 1.0, "a", skip=(0, 6, 8)).run()
    assert {labels[i] for i in assoc.members} == ALL - {"a0", "a6", "a8"}
    assert np.hypot(*(assoc.fix.position[:2] - SOURCE[:2])) < 0.05


def test_next_round_overlapping_in_time_is_left_for_its_own_window() -> None:
    # round 2 fired 0.3 s later reaches near sensors before round 1 reaches far ones
    w = Window().shot(SOURCE, 1.0, "a").shot(SOURCE, 1.3, "b")
    t_a_far = max(t for t, _, lab in w.rows if lab.startswith("a"))
    t_b_near = min(t for t, _, lab in w.rows if lab.startswith("b"))
    assert t_b_near < t_a_far  # the windows really overlap
    assert w.members() == ALL


def test_second_shooter_elsewhere_at_the_same_time_is_left_alone() -> None:
    w = Window().shot(SOURCE, 1.0, "a").shot(np.array([-450.0, 420.0, 2.0]), 1.01, "b")
    seed_label = sorted(w.rows)[0][2]
    expected = ALL if seed_label.startswith("a") else {f"b{i}" for i in range(12)}
    assert w.members() == expected


def test_fit_unheard_by_nearby_listening_sensors_is_rejected() -> None:
    # four echoes that happen to fit one source, while eight sensors near it heard nothing
    phantom = np.array([0.0, 0.0, 10.0])
    w = Window()
    for i in (0, 2, 6, 8):  # the four corners only
        w.add(i, 1.0 + np.linalg.norm(SENSORS[i] - phantom) / C, f"e{i}")
    assert w.run(known=False)[0] is not None  # geometrically consistent ...
    assert w.run(known=True)[0] is None  # ... but the sensors near it stayed silent


def test_gate_keeps_only_pulses_other_sensors_could_hear_from_the_seeds_source() -> None:
    pos = SENSORS[[4, 4, 5, 7, 0]]
    sep = np.linalg.norm(SENSORS[[5, 7, 0]] - SENSORS[4], axis=1)
    times = np.array([0.0, 0.01, sep[0] / C - 0.001, sep[1] / C + 0.2, 0.5])
    # index 1: same sensor as the seed (echo); 2: within its travel time; 3: too late;
    # 4: sensor 0 is 860 m away (2.5 s), so 0.5 s is possible
    assert list(gate(pos, times, np.array([4, 4, 5, 7, 0]), 0, C, CFG)) == [2, 4]


def test_heard_share_counts_silent_sensors_near_the_source() -> None:
    ring = SENSORS[[4, 9, 10, 11]]  # the centre sensor and the inner ring (~430 m)
    # out to 700 m four more sensors listen (1, 3, 5, 7) but did not hear it: 4 of 8
    assert heard_share(SENSORS[4], ring, SENSORS, 700.0) == pytest.approx(0.5)
    # out to the median heard distance (~428 m) everyone listening heard it
    assert heard_share(SENSORS[4], ring, SENSORS, 100.0) == 1.0


# member pulses at sensors a, b, c, d (t = 1.0, 1.1, 1.2, 1.3 s, 10 dB) against earlier pulses
_M_T = [1.0, 1.1, 1.2, 1.3]
_M_S = ["a", "b", "c", "d"]
_M_DB = [10.0, 10.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("prior", "expected"),
    [
        # louder pulse 0.4 s earlier at the same sensor: an echo of it
        ([(0.6, "a", 20.0)], [True, False, False, False]),
        # at least as loud counts (an echo is never louder than its direct sound)
        ([(0.6, "a", 10.0)], [True, False, False, False]),
        # quieter earlier pulse: the member may be a new, louder sound
        ([(0.6, "a", 5.0)], [False, False, False, False]),
        # quieter by less than the 1 dB margin (SNR scatter): still an echo of it
        ([(0.6, "a", 9.5)], [True, False, False, False]),
        # earlier pulse at another sensor: says nothing about this one
        ([(0.6, "z", 30.0)], [False, False, False, False]),
        # beyond the echo horizon (6 s): too long a path to be heard
        ([(-5.5, "a", 30.0)], [False, False, False, False]),
        # later pulse: an echo comes after its direct sound, never before
        ([(1.2, "a", 30.0)], [False, False, False, False]),
        # unknown loudness: no evidence either way, not an echo
        ([(0.6, "a", float("nan"))], [False, False, False, False]),
        # every member trails an earlier pulse by the same 0.5 s: a repeat round, not echoes
        ([(0.5, "a", 20.0), (0.6, "b", 20.0), (0.7, "c", 9.0), (0.8, "d", 20.0)],
         [False, False, False, False]),
        # only 2 of 4 (< 3) share a delay: no repeat, the louder ones are echoes
        ([(0.5, "a", 20.0), (0.6, "b", 20.0), (0.2, "c", 20.0)], [True, True, True, False]),
    ],
)
def test_echo_shadowed(prior: list[tuple[float, str, float]], expected: list[bool]) -> None:
    mask = echo_shadowed(
        np.array(_M_T), np.array(_M_S), np.array(_M_DB),
        np.array([p[0] for p in prior]), np.array([p[1] for p in prior]),
        np.array([p[2] for p in prior]), horizon_s=6.0, repeat_tol_s=0.05,
        level_margin_db=1.0,
    )
    assert mask.tolist() == expected
