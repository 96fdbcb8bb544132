"""The compiled robust path of ``locate`` makes the batch path's decisions, to rounding.

``locate`` tries the compiled fast path, then (for problems with inconsistent arrivals) the
compiled robust kernel ``solver_jit.ROBUST_KERNEL`` instead of ``locate_batch`` with a batch of
one. These specifications pin the kernel to the batch path: the same consistent set, the same
position, time, residuals and uncertainty — on constructed outliers (echoes, diffracted
arrivals, bad clocks) and on every real pulse set of the solver benchmark (Pittsburgh 2018,
skipped when the shared kit is absent). The consensus hypothesis itself must be *bit*-identical
to numpy's, so ties in its argmin resolve the same way.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from bench.solver import load_problems
from services.locator import solver, solver_jit
from services.locator.config import LocatorConfig
from services.locator.solver import Fix, locate, locate_batch
from tests.unit.locator.conftest import SENSORS, C

pytestmark = pytest.mark.skipif(
    solver_jit.ROBUST_KERNEL is None, reason="numba not installed: only the numpy path exists"
)

CFG = LocatorConfig()
SOURCE = np.array([120.0, -80.0, 2.0])

Problem = tuple[np.ndarray, np.ndarray, float]  # positions (n, 3), times (n,), c


def arrivals(source: np.ndarray = SOURCE, sensors: np.ndarray = SENSORS) -> np.ndarray:
    return 100.0 + np.linalg.norm(sensors - source, axis=1) / C


def batched(positions: np.ndarray, times: np.ndarray, c: float, config: LocatorConfig):
    """The reference: ``locate_batch`` with a batch of one."""
    return locate_batch(positions[None], times[None], np.ones((1, len(times)), bool), c, config)[0]


def assert_same_fix(got: Fix | None, want: Fix | None) -> None:
    """Same decision (fix or none, consistent set) and the same numbers, far below a centimetre."""
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    assert np.array_equal(got.used, want.used)
    assert np.allclose(got.position, want.position, rtol=0.0, atol=1e-4)  # 0.1 mm
    assert got.emission_time_s == pytest.approx(want.emission_time_s, abs=1e-7)
    assert np.allclose(got.residuals_s, want.residuals_s, rtol=0.0, atol=1e-7)
    assert got.rms_s == pytest.approx(want.rms_s, rel=1e-6, abs=1e-9)
    assert got.radius95_m == pytest.approx(want.radius95_m, rel=1e-6)
    assert got.semi_major_m == pytest.approx(want.semi_major_m, rel=1e-6)
    assert got.semi_minor_m == pytest.approx(want.semi_minor_m, rel=1e-6)
    assert np.allclose(got.covariance_m2, want.covariance_m2, rtol=1e-6, atol=1e-9)
    # orientation is only defined for an elongated ellipse; compare it modulo 180°
    if got.semi_major_m - got.semi_minor_m > 1e-3:
        turn = (got.orientation_deg - want.orientation_deg + 90.0) % 180.0 - 90.0
        assert abs(turn) < 1e-3


def centred(positions: np.ndarray, times: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions and ranges re-centred on the first arrival, as both paths do internally."""
    first = int(np.argmin(times))
    return positions - positions[first], (times - times[first]) * c


def needs_consensus(positions: np.ndarray, times: np.ndarray, c: float, config: LocatorConfig):
    """Whether the batch path's first refinement is 'bad' (so its consensus search runs)."""
    pos, rho = centred(positions, times, c)
    valid = np.ones((1, len(times)), bool)
    z0 = np.zeros(1)
    tol = np.array([config.association_tolerance_s * c])
    theta, _, _, used = solver.refine(
        pos[None], rho[None], valid, solver.linear_init(pos[None], rho[None], valid, z0), z0,
        config, tol,
    )
    need = max(config.min_sensors, int(np.ceil(0.75 * len(times))))
    return bool(used.sum() < need or not np.all(np.isfinite(theta)))


def dirty(late: dict[int, float], noise_s: float = 0.0, seed: int = 0) -> np.ndarray:
    """Arrivals from SOURCE at the twelve sensors, ``late`` seconds added per sensor."""
    t = arrivals() + np.random.default_rng(seed).normal(0.0, noise_s, len(SENSORS))
    for i, dt in late.items():
        t[i] += dt
    return t


ECHO = {3: 0.030}  # an echo 30 ms after the (missed) direct sound
DIFFRACTED = {7: 0.040}  # 14 m of extra path round a building
MILD_DIFFRACTION = {9: 0.012}  # within the gate: kept, but down-weighted by Huber
BAD_CLOCK = {5: -0.300}  # early, so it is the first arrival: the reference of the re-centring
EVERYTHING = {3: 0.030, 7: 0.040, 5: -0.300, 10: 0.120}  # four of twelve: consensus must run

CASES: dict[str, tuple[np.ndarray, np.ndarray, LocatorConfig]] = {
    "echo": (SENSORS, dirty(ECHO), CFG),
    "diffracted": (SENSORS, dirty(DIFFRACTED), CFG),
    "mild and strong diffraction": (SENSORS, dirty(MILD_DIFFRACTION | DIFFRACTED), CFG),
    "bad clock": (SENSORS, dirty(BAD_CLOCK), CFG),
    "four outliers": (SENSORS, dirty(EVERYTHING), CFG),
    "four outliers, noisy": (SENSORS, dirty(EVERYTHING, noise_s=0.001, seed=4), CFG),
    "four outliers, 2-D": (SENSORS, dirty(EVERYTHING), replace(CFG, solve_3d=False)),
    "too few consistent": (SENSORS[:5], dirty({1: 0.2, 2: -0.3})[:5], CFG),
    "nine sensors, three outliers": (SENSORS[:9], dirty({0: 0.05, 4: 0.08, 8: -0.2})[:9], CFG),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_robust_path_makes_the_batch_decisions(name: str) -> None:
    positions, times, config = CASES[name]
    # these problems are for the robust path: the fast path must decline them
    assert solver._locate_fast(positions, times, C, config) is None
    assert_same_fix(locate(positions, times, C, config), batched(positions, times, C, config))


def test_the_constructed_cases_exercise_the_consensus_search() -> None:
    """Otherwise the tests above would not check the compiled consensus at all."""
    assert needs_consensus(*CASES["four outliers"][:2], C, CFG)
    assert needs_consensus(*CASES["four outliers, 2-D"][:2], C, CASES["four outliers, 2-D"][2])
    assert needs_consensus(*CASES["nine sensors, three outliers"][:2], C, CFG)


def test_compiled_consensus_rejects_every_outlier_and_finds_the_source() -> None:
    positions, times, config = CASES["four outliers"]
    fix = locate(positions, times, C, config)
    assert fix is not None
    assert sorted(np.flatnonzero(~fix.used)) == sorted(EVERYTHING)
    assert np.hypot(*(fix.position[:2] - SOURCE[:2])) < 0.05
    assert fix.residuals_s[5] == pytest.approx(-0.300, abs=0.002)  # signed: early is negative


def test_too_few_consistent_arrivals_give_no_fix_on_the_compiled_path() -> None:
    positions, times, config = CASES["too few consistent"]
    assert solver._locate_robust_jit(positions, times, C, config) is None


def test_locate_without_the_compiled_robust_kernel_takes_the_batch_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    positions, times, config = CASES["four outliers"]
    compiled = locate(positions, times, C, config)
    monkeypatch.setattr(solver, "ROBUST_KERNEL", None)
    calls: list[int] = []
    real = solver.locate_batch

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(solver, "locate_batch", spy)
    plain = locate(positions, times, C, config)
    assert calls  # the numpy fallback answered
    assert_same_fix(compiled, plain)


def test_inputs_the_kernel_cannot_follow_are_left_to_the_batch_path() -> None:
    """A non-finite time: the kernel defers and the answer is the batch path's."""
    times = dirty(EVERYTHING)
    times[2] = np.nan
    assert_same_fix(solver._locate_robust_jit(SENSORS, times, C, CFG),
                    batched(SENSORS, times, C, CFG))


def compiled_consensus(
    positions: np.ndarray, times: np.ndarray, c: float, config: LocatorConfig
) -> tuple[np.ndarray, bool]:
    pos, rho = centred(positions, times, c)
    theta = np.empty(4)
    found = solver_jit._consensus_one(
        pos, rho, config.association_tolerance_s * c, solver.MAX_CONSENSUS_ARRIVALS, theta
    )
    return theta, bool(found)


def numpy_consensus(
    positions: np.ndarray, times: np.ndarray, c: float, config: LocatorConfig
) -> tuple[np.ndarray, bool]:
    pos, rho = centred(positions, times, c)
    theta, found = solver._consensus(
        pos[None], rho[None], np.ones((1, len(times)), bool), np.zeros(1),
        np.array([config.association_tolerance_s * c]),
    )
    return theta[0], bool(found[0])


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_consensus_hypothesis_is_bit_identical_to_numpy(name: str) -> None:
    positions, times, config = CASES[name]
    got, got_found = compiled_consensus(positions, times, C, config)
    want, want_found = numpy_consensus(positions, times, C, config)
    assert got_found == want_found
    assert np.array_equal(got, want)


def test_msac_costs_are_summed_in_numpy_order() -> None:
    """Pairwise summation, as numpy's: equal costs there are equal costs here (and unequal
    ones unequal), so the first-minimum argmin cannot pick a different hypothesis."""
    rng = np.random.default_rng(5)
    for n in [*range(1, 41), 129, 300]:
        x = rng.uniform(0.0, 75.0, n) * np.exp(rng.normal(0.0, 4.0, n))
        assert solver_jit.numpy_sum(x, n) == x.sum()


def test_consensus_ties_resolve_to_the_first_hypothesis_as_numpy_argmin() -> None:
    """Noiseless arrivals: many triples give the exact source, with costs equal to rounding;
    both the numpy and the compiled search must pick the very same one."""
    positions = SENSORS[:10]
    times = arrivals(sensors=positions)
    got, _ = compiled_consensus(positions, times, C, CFG)
    want, _ = numpy_consensus(positions, times, C, CFG)
    assert np.array_equal(got, want)


# --- real pulse sets ----------------------------------------------------------------------


@lru_cache(maxsize=2)
def _load_pulse_sets(data: Path) -> tuple[Problem, ...]:
    """The problems of ``bench/solver.py`` (its own loader): the vendor's pulse set of every
    shot, positions centred, times relative to the first, c of the test's weather."""
    return tuple((pos, t, c) for pos, t, c, _survey in load_problems(data))


@pytest.fixture
def pulse_sets(shared_kit: Path) -> tuple[Problem, ...]:
    data = shared_kit / "data" / "pittsburgh-2018"
    if not data.is_dir():
        pytest.skip(f"no Pittsburgh 2018 data at {data}")
    problems = _load_pulse_sets(data)
    assert len(problems) >= 100
    return problems


def test_real_pulse_sets_compiled_robust_path_agrees_with_the_batch_path(
    pulse_sets: tuple[Problem, ...],
) -> None:
    """Every real problem through the compiled robust kernel (not only those the fast path
    declines) and through ``locate``: the batch path's answers."""
    declined = 0
    for positions, times, c in pulse_sets:
        want = batched(positions, times, c, CFG)
        assert_same_fix(solver._locate_robust_jit(positions, times, c, CFG), want)
        if solver._locate_fast(positions, times, c, CFG) is None:
            declined += 1
            assert_same_fix(locate(positions, times, c, CFG), want)
    assert declined > 0  # the real data does exercise the fallback of ``locate``


def test_real_pulse_sets_with_injected_outliers_agree_with_the_batch_path(
    pulse_sets: tuple[Problem, ...],
) -> None:
    """Real geometry, forced through consensus: the second and fourth arrivals made echoes
    (+30 ms, +70 ms) and the last a bad clock (-250 ms)."""
    rng = np.random.default_rng(11)
    consensus_runs = 0
    for positions, times, c in pulse_sets:
        order = np.argsort(times, kind="stable")
        t = times.copy()
        t[order[[1, 3, -1]]] += [0.030, 0.070, -0.250]
        t[order[rng.integers(4, len(t) - 1)]] += 0.045  # and one more, anywhere
        consensus_runs += needs_consensus(positions, t, c, CFG)
        assert_same_fix(locate(positions, t, c, CFG), batched(positions, t, c, CFG))
        got, got_found = compiled_consensus(positions, t, c, CFG)
        want, want_found = numpy_consensus(positions, t, c, CFG)
        assert got_found == want_found and np.array_equal(got, want)
    assert consensus_runs >= 10


def test_real_pulse_sets_consensus_hypothesis_is_bit_identical_to_numpy(
    pulse_sets: tuple[Problem, ...],
) -> None:
    for positions, times, c in pulse_sets:
        got, got_found = compiled_consensus(positions, times, c, CFG)
        want, want_found = numpy_consensus(positions, times, c, CFG)
        assert got_found == want_found
        assert np.array_equal(got, want)
