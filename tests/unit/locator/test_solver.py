"""The solver: exact on clean data, robust to outliers, well conditioned, honest radius."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.locator.config import LocatorConfig
from services.locator.solver import ellipse95, locate, locate_batch
from tests.unit.locator.conftest import SENSORS, C

CFG = LocatorConfig()


def arrivals(source: np.ndarray, fired_at: float = 100.0, sensors: np.ndarray = SENSORS):
    return fired_at + np.linalg.norm(sensors - source, axis=1) / C


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-550, 550), st.floats(-550, 550), st.floats(0, 20), st.floats(-5.0, 5.0)
)
def test_noiseless_shot_inside_the_array_is_located_within_centimetres(
    east: float, north: float, up: float, fired_at: float
) -> None:
    source = np.array([east, north, up])
    fix = locate(SENSORS, arrivals(source, fired_at), C, CFG)
    assert fix is not None
    assert np.hypot(*(fix.position[:2] - source[:2])) < 0.05
    assert abs(fix.emission_time_s - fired_at) < 1e-4
    assert fix.used.all()


def test_inconsistent_sensor_is_rejected_and_reported() -> None:
    source = np.array([120.0, -80.0, 2.0])
    t = arrivals(source)
    t[4] += 0.30  # a clock 300 ms off
    t[7] += 0.04  # a diffracted arrival: 14 m of extra path
    fix = locate(SENSORS, t, C, CFG)
    assert fix is not None
    assert list(np.flatnonzero(~fix.used)) == [4, 7]
    assert fix.residuals_s[4] == pytest.approx(0.30, abs=0.002)  # signed: late is positive
    assert np.hypot(*(fix.position[:2] - source[:2])) < 0.05


def test_too_few_consistent_sensors_gives_no_fix() -> None:
    source = np.array([0.0, 0.0, 5.0])
    t = arrivals(source)[:5]
    t[[1, 2]] += [0.2, -0.3]  # only three of five agree; four are required
    assert locate(SENSORS[:5], t, C, CFG) is None


def test_epoch_times_and_far_coordinates_are_centred_not_lost() -> None:
    """Kilometres from the origin and epoch-second times must not cost precision."""
    far = SENSORS + np.array([12_000.0, -9_000.0, 0.0])
    source = np.array([12_150.0, -9_210.0, 8.0])
    epoch = 1_795_000_000.123
    fix = locate(far, arrivals(source, epoch, far), C, CFG)
    assert fix is not None
    assert np.hypot(*(fix.position[:2] - source[:2])) < 0.05


def test_batch_gives_the_same_answers_as_single_solves() -> None:
    rng = np.random.default_rng(7)
    sources = np.c_[rng.uniform(-500, 500, (20, 2)), rng.uniform(0, 15, 20)]
    times = np.stack([arrivals(s) + rng.normal(0, 5e-4, len(SENSORS)) for s in sources])
    valid = np.ones(times.shape, bool)
    valid[3, [0, 5]] = False  # padding: problem 3 has only ten sensors
    batch = locate_batch(np.broadcast_to(SENSORS, (20, 12, 3)), times, valid, C, CFG)
    for i, fix in enumerate(batch):
        single = locate(SENSORS[valid[i]], times[i][valid[i]], C, CFG)
        assert fix is not None and single is not None
        assert np.allclose(fix.position, single.position, atol=2e-3)  # fast path stops at 1 mm


def test_radius95_covers_the_truth_about_95_percent_under_gaussian_timing_noise() -> None:
    cfg = LocatorConfig(radius95_floor_m=0.0, range_sigma_floor_m=0.01)
    rng = np.random.default_rng(3)
    n = 400
    sources = np.c_[rng.uniform(-450, 450, (n, 2)), np.full(n, 10.0)]
    sigma = 0.002  # 2 ms ≈ 0.7 m of range
    times = np.stack([arrivals(s) + rng.normal(0, sigma, len(SENSORS)) for s in sources])
    fixes = locate_batch(
        np.broadcast_to(SENSORS, (n, 12, 3)), times, np.ones(times.shape, bool), C, cfg
    )
    inside = [
        np.hypot(*(f.position[:2] - s[:2])) <= f.radius95_m
        for f, s in zip(fixes, sources, strict=True)
        if f is not None
    ]
    assert len(inside) >= 0.97 * n
    assert 0.90 <= np.mean(inside) <= 0.995


@pytest.mark.parametrize(
    ("cov", "orientation"),
    [
        (np.diag([1.0, 9.0]), 0.0),  # elongated north-south: major axis points north
        (np.diag([9.0, 1.0]), 90.0),  # elongated east-west: major axis points east
        (np.array([[5.0, 4.0], [4.0, 5.0]]), 45.0),  # along north-east
    ],
)
def test_ellipse_orientation_is_clockwise_from_north(cov: np.ndarray, orientation: float) -> None:
    cfg = LocatorConfig(radius95_floor_m=0.0)
    radius, major, minor, orient = ellipse95(cov, cfg)
    assert orient == pytest.approx(orientation, abs=1e-6)
    assert major == radius == pytest.approx(np.sqrt(5.991464547107979 * 9.0), rel=1e-6)
    assert minor == pytest.approx(np.sqrt(5.991464547107979 * 1.0), rel=1e-6)


def test_single_problem_helpers_give_the_batched_answers() -> None:
    """The engine's per-window helpers are the batched solver's maths, not a new model."""
    from services.locator.solver import (
        gauss_newton,
        gauss_newton_one,
        triple_hypotheses,
        triple_hypotheses_one,
    )

    rng = np.random.default_rng(3)
    pos = SENSORS[:8] - SENSORS[0]
    src = np.array([150.0, -80.0, 0.0])
    rho = np.sqrt(((pos - src) ** 2).sum(-1)) + rng.normal(0, 0.3, len(pos))
    tri = np.array([[0, 1, 2], [0, 3, 5], [1, 4, 6]])
    p1, t1, ok1 = triple_hypotheses_one(pos, rho, tri)
    pb, tb, okb = triple_hypotheses(pos[None, :, :2], pos[None, :, 2], rho[None], tri, np.zeros(1))
    assert np.array_equal(ok1, okb[0])
    assert np.allclose(p1[ok1], pb[0][ok1]) and np.allclose(t1[ok1], tb[0][ok1])
    start = np.array([100.0, -50.0, 0.0, 0.0])
    th1, r1, info1 = gauss_newton_one(pos, rho, start, CFG, 6, solve_3d=False)
    cfg2d = LocatorConfig(solve_3d=False)
    thb, rb, infob = gauss_newton(pos[None], rho[None], np.ones((1, 8)), start[None],
                                  np.zeros(1), cfg2d, 6)
    assert np.allclose(th1, thb[0], atol=1e-3) and np.allclose(r1, rb[0], atol=1e-2)
    assert np.allclose(info1, infob[0], rtol=1e-3, atol=1e-6)


def test_compiled_fast_path_matches_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.locator import solver

    if solver.KERNEL is None:
        pytest.skip("numba not installed: only the numpy path exists")
    pos = SENSORS[:9]
    times = arrivals(np.array([210.0, 95.0, 3.0]), sensors=pos)
    compiled = solver._locate_fast(pos, times, C, CFG)
    monkeypatch.setattr(solver, "KERNEL", None)
    plain = solver._locate_fast(pos, times, C, CFG)
    assert compiled is not None and plain is not None
    assert np.allclose(compiled.position, plain.position, atol=1e-9)
    assert compiled.radius95_m == pytest.approx(plain.radius95_m, rel=1e-9)
