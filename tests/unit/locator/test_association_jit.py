"""The compiled association core decides exactly as the numpy path does.

``associate`` runs ``association_jit.CORE`` when numba is installed and the numpy functions of
``association`` otherwise. These specifications pin the two together: the same decision (a
source or noise), the same pulses, consistent set and position (to far below a centimetre) —
on constructed dirty windows (echoes, diffraction, bad clocks, bursts, two shooters, unrelated
noise, every pulse in turn as the seed) and on real windows of the Pittsburgh 2018 test
(skipped when the shared kit is absent). The pieces are pinned too: the consensus hypothesis
is *bit*-identical to numpy's (ties resolve the same way) and the Gauss-Newton copy follows
``solver.gauss_newton_one``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from services.locator import association, association_jit
from services.locator.association import Association, associate
from services.locator.config import LocatorConfig
from services.locator.solver import gauss_newton_one
from shared.geo import speed_of_sound
from tests.unit.locator.conftest import SENSORS, C

pytestmark = pytest.mark.skipif(
    association_jit.CORE is None, reason="numba not installed: only the numpy path exists"
)

CFG = LocatorConfig()

Window = tuple[np.ndarray, np.ndarray, np.ndarray]  # positions (M, 3), times (M,), sensors (M,)


def numpy_associate(
    monkeypatch: pytest.MonkeyPatch, *args: object, **kwargs: object
) -> Association | None:
    """``associate`` through the numpy fallback (as without numba)."""
    with monkeypatch.context() as m:
        m.setattr(association, "CORE", None)
        return associate(*args, **kwargs)  # type: ignore[arg-type]


def assert_same(got: Association | None, want: Association | None) -> None:
    """Same decision, pulses and consistent set; the same fit to far below a centimetre."""
    assert (got is None) == (want is None)
    if got is None or want is None:
        return
    assert np.array_equal(got.pulses, want.pulses)
    assert np.array_equal(got.fix.used, want.fix.used)
    assert np.allclose(got.fix.position, want.fix.position, rtol=0.0, atol=1e-4)  # 0.1 mm
    assert got.fix.emission_time_s == pytest.approx(want.fix.emission_time_s, abs=1e-7)
    assert np.allclose(got.fix.residuals_s, want.fix.residuals_s, rtol=0.0, atol=1e-7)
    assert got.fix.radius95_m == pytest.approx(want.fix.radius95_m, rel=1e-6)


def dirty_window(rng: np.random.Generator) -> Window:
    """One to three sources (bursts of up to three rounds) heard by the twelve sensors, with
    missed sensors, echoes, diffracted arrivals, a bad clock and unrelated noise."""
    rows: list[tuple[float, int]] = []
    bad_clock = {int(rng.integers(12)): float(rng.choice([-0.15, 0.12, 0.3]))}
    for _ in range(int(rng.integers(1, 4))):
        source = np.r_[rng.uniform(-900, 900, 2), rng.uniform(0, 10)]
        fired = rng.uniform(0.0, 1.5)
        for _ in range(int(rng.integers(1, 4))):  # a burst: same place, ~0.2-0.4 s apart
            for i, s in enumerate(SENSORS):
                if rng.random() < 0.2:
                    continue  # missed
                t = fired + np.linalg.norm(s - source) / C + rng.normal(0, 2e-4)
                if rng.random() < 0.1:
                    t += rng.uniform(0.03, 0.12)  # diffracted: around a building
                t += bad_clock.get(i, 0.0) if rng.random() < 0.7 else 0.0
                rows.append((t, i))
                if rng.random() < 0.15:
                    rows.append((t + rng.uniform(0.02, 0.6), i))  # echo at the same sensor
            fired += rng.uniform(0.2, 0.4)
    for _ in range(int(rng.integers(0, 6))):  # door slams, single-sensor noise
        rows.append((rng.uniform(0.0, 4.0), int(rng.integers(12))))
    rows.sort()
    times = np.array([r[0] for r in rows])
    sensors = np.array([r[1] for r in rows])
    return SENSORS[sensors], times, sensors


def test_constructed_dirty_windows_every_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    outcomes = {"fix": 0, "none": 0}
    for _ in range(120):
        positions, times, sensors = dirty_window(rng)
        for seed in range(min(len(times), 8)):
            args = (positions, times - times[seed], sensors, seed, C, CFG)
            want = numpy_associate(monkeypatch, *args, known_sensors=SENSORS)
            assert_same(associate(*args, known_sensors=SENSORS), want)
            assert_same(associate(*args), numpy_associate(monkeypatch, *args))
            outcomes["none" if want is None else "fix"] += 1
    # both outcomes are exercised in earnest
    assert outcomes["fix"] >= 100 and outcomes["none"] >= 100


@pytest.mark.parametrize(
    "config",
    [
        LocatorConfig(solve_3d=False),
        LocatorConfig(min_sensors=3, association_tolerance_s=0.01),
        LocatorConfig(min_sensors_3d=4, huber_m=1.0, gauss_newton_iterations=2),
    ],
)
def test_other_configs_agree(monkeypatch: pytest.MonkeyPatch, config: LocatorConfig) -> None:
    rng = np.random.default_rng(21)
    for _ in range(40):
        positions, times, sensors = dirty_window(rng)
        args = (positions, times, sensors, 0, C, config)
        want = numpy_associate(monkeypatch, *args, known_sensors=SENSORS)
        assert_same(associate(*args, known_sensors=SENSORS), want)


def test_sensor_codes_of_any_kind_group_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """String codes (ranked before the compiled core) and unordered integer codes."""
    rng = np.random.default_rng(3)
    perm = rng.permutation(12) * 7 - 30  # negative and unordered codes
    for _ in range(30):
        positions, times, sensors = dirty_window(rng)
        want = numpy_associate(monkeypatch, positions, times, sensors, 0, C, CFG)
        named = np.array([f"s{i:02d}" for i in sensors])
        assert_same(associate(positions, times, named, 0, C, CFG), want)
        shuffled = perm[sensors]
        assert_same(
            associate(positions, times, shuffled, 0, C, CFG),
            numpy_associate(monkeypatch, positions, times, shuffled, 0, C, CFG),
        )


def test_non_finite_input_is_decided_by_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    positions, times, sensors = dirty_window(np.random.default_rng(5))
    times = times.copy()
    times[-1] = np.nan
    status = association_jit.CORE(  # type: ignore[misc]
        positions, times, sensors.astype(np.int64), 0, C, 0.025, 2000.0, 4, 0.25, 24, 10, 4,
        3.0, 1 / 900, 1e-6, 1e-3, True, 6,
    )[0]
    assert status == association_jit.STATUS_DEFER
    assert_same(
        associate(positions, times, sensors, 0, C, CFG),
        numpy_associate(monkeypatch, positions, times, sensors, 0, C, CFG),
    )


def test_consensus_hypothesis_is_bit_identical_to_numpy() -> None:
    """Random pools, triples through the seed and (for the guard) without it."""
    rng = np.random.default_rng(13)
    tol_m = CFG.association_tolerance_s * C
    for trial in range(200):
        positions, times, sensors = dirty_window(rng)
        pos = positions - positions[0]
        rho = (times - times[0]) * C
        codes, gid = np.unique(sensors, return_inverse=True)
        n = len(rho)
        if n < 4:
            continue
        tri = np.array(
            [(a, b, d) for a in range(min(n, 6)) for b in range(a + 1, n) for d in range(b + 1, n)
             if sensors[a] != sensors[b] != sensors[d]][:300]
        ).reshape(-1, 3)
        if len(tri) == 0:
            continue
        exclude = trial % 2 == 1
        want = association._consensus_theta(pos, rho, sensors, tri, tol_m, CFG, exclude)
        got = np.empty(4)
        found = association_jit._consensus(
            pos, rho, gid.astype(np.int64), len(codes), tri[:, 0].astype(np.int64),
            tri[:, 1].astype(np.int64), tri[:, 2].astype(np.int64), len(tri), tol_m,
            CFG.max_range_m**2, exclude, got,
        )
        assert found == (want is not None)
        if want is not None:
            assert np.array_equal(got, want)


@pytest.mark.parametrize("solve_3d", [False, True])
def test_gauss_newton_copy_follows_the_solver(solve_3d: bool) -> None:
    rng = np.random.default_rng(17)
    for _ in range(100):
        source = np.r_[rng.uniform(-800, 800, 2), rng.uniform(0, 10)]
        n = int(rng.integers(4, 12))
        pos = SENSORS[rng.choice(12, n, replace=False)]
        rho = np.linalg.norm(pos - source, axis=1) + rng.normal(0, 0.5, n)
        rho[rng.random(n) < 0.2] += 20.0  # outliers: Huber weights
        start = np.r_[source[:2] + rng.normal(0, 30, 2), 0.0, rng.normal(0, 10)]
        iterations = int(rng.integers(1, 6))
        want_th, _, want_info = gauss_newton_one(pos, rho, start, CFG, iterations, solve_3d)
        th = np.empty(4)
        info = np.empty((4, 4))
        association_jit._gauss_newton(
            pos, rho, np.arange(n), n, start, iterations, solve_3d, CFG.huber_m,
            1.0 / CFG.z_prior_sigma_m**2, association_jit.PRIOR_FLOOR_M2,
            association_jit.CONVERGED_M, th, info,
        )
        assert np.allclose(th, want_th, rtol=0.0, atol=1e-7)
        assert np.allclose(info, want_info, rtol=1e-9, atol=1e-9)


def test_pairwise_sum_is_numpys() -> None:
    rng = np.random.default_rng(19)
    for n in [*range(1, 40), 127, 128, 129, 300]:
        x = (rng.random((3, n)) * 10.0) ** 3
        for row, want in zip(x, x.sum(-1), strict=True):
            assert association_jit.numpy_sum(row, n) == want


# --- real windows ----------------------------------------------------------------------------


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _real_windows(data: Path) -> list[tuple[Window, np.ndarray, float]]:
    """Every pulse of every Pittsburgh test as a seed, with all pulses (echoes, noise and
    other rounds included) that follow it within the engine's horizon (max range / c + 1 s);
    positions relative to the seed, times relative to it, the test's listening sensors."""
    windows = []
    for test_dir in sorted(data.glob("FP*/test_*")):
        name = test_dir.name
        pulses = json.loads((test_dir / f"{name}.allpulses.json").read_text())
        temp = json.loads((test_dir / f"{name}.weather.json").read_text())["temperature"]
        c = speed_of_sound(float(temp))
        xyz = np.array([[p["location"][k] for k in "xyz"] for p in pulses], float)
        t = np.array([_ts(p["arrival_time_utc"]) for p in pulses])
        names = sorted({p["serial_number"] for p in pulses})
        code = np.array([names.index(p["serial_number"]) for p in pulses])
        order = np.argsort(t, kind="stable")
        xyz, t, code = xyz[order], t[order], code[order]
        known = np.array([xyz[code == k][0] for k in range(len(names))])
        horizon = CFG.max_range_m / c + 1.0
        for s in range(len(t)):
            w = np.flatnonzero((t >= t[s]) & (t <= t[s] + horizon))
            offset = xyz[s]
            windows.append(((xyz[w] - offset, t[w] - t[s], code[w]), known - offset, c))
    return windows


def test_real_windows_agree(shared_kit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = shared_kit / "data" / "pittsburgh-2018"
    if not data.is_dir():
        pytest.skip(f"no Pittsburgh 2018 data at {data}")
    windows = _real_windows(data)
    assert len(windows) > 1000
    located = 0
    for (positions, times, codes), known, c in windows:
        args = (positions, times, codes, 0, c, CFG)
        want = numpy_associate(monkeypatch, *args, known_sensors=known)
        assert_same(associate(*args, known_sensors=known), want)
        located += want is not None
    assert located >= 180  # every round fired is some window's seed


def echo_case(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Members of a fit and the earlier sounds before them: repeats of earlier rounds from the
    same place (a shared delay at many sensors), louder and weaker echoes, sounds at other
    sensors, unknown loudness (NaN) and sounds beyond the horizon."""
    m = int(rng.integers(1, 16))
    member_sensors = rng.permutation(30)[:m].astype(float)
    member_times = rng.uniform(0.0, 2.0, m)
    member_db = np.where(rng.random(m) < 0.1, np.nan, rng.uniform(5, 40, m))
    rows: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(0, 3))):  # earlier rounds of a burst: one shared delay
        delay = rng.uniform(0.1, 1.0)
        for k in range(m):
            if rng.random() < 0.6:
                jitter = rng.normal(0, 0.01)
                rows.append((member_times[k] - delay + jitter, member_sensors[k],
                             rng.uniform(0, 45)))
    for _ in range(int(rng.integers(0, 40))):  # anything else, at any sensor, any loudness
        rows.append((rng.uniform(-7.0, 2.5), float(rng.integers(30)),
                     np.nan if rng.random() < 0.1 else rng.uniform(0, 45)))
    prior = np.array(rows, float).reshape(-1, 3)
    return member_times, member_sensors, member_db, prior[:, 0], prior[:, 1], prior[:, 2]


@pytest.mark.skipif(association_jit.ECHO is None, reason="numba not installed")
def test_compiled_echo_test_marks_the_same_members_as_numpy() -> None:
    rng = np.random.default_rng(11)
    shadowed = 0
    for _ in range(3000):
        case = echo_case(rng)
        args = (*case, 6.0, 0.05, 1.0)
        expected = association._echo_shadowed_numpy(*args)
        assert association.echo_shadowed(*args).tolist() == expected.tolist()
        shadowed += int(expected.sum())
    assert shadowed > 500  # echoes and repeats both exercised, not only empty masks


@pytest.mark.skipif(association_jit.ECHO is None, reason="numba not installed")
def test_compiled_echo_test_takes_string_and_integer_sensor_codes() -> None:
    names = np.array(["a", "b", "c", "d"])
    args = (np.array([1.0, 1.1, 1.2, 1.3]), names, np.full(4, 10.0),
            np.array([0.6, 0.2]), np.array(["a", "z"]), np.array([30.0, 30.0]), 6.0, 0.05)
    assert association.echo_shadowed(*args).tolist() == [True, False, False, False]
    as_ints = (args[0], np.arange(4), args[2], args[3], np.array([0, 25]), *args[4 + 1 :])
    assert association.echo_shadowed(*as_ints).tolist() == [True, False, False, False]


@pytest.mark.skipif(association_jit.HEARD is None, reason="numba not installed")
def test_compiled_heard_share_is_numpys_to_the_bit() -> None:
    # Fits anywhere in and around a 2 km array, heard by a few to all of the sensors near
    # them; the radius (median distance or hearing range) lands on a sensor's distance often.
    rng = np.random.default_rng(5)
    shares = set()
    for _ in range(3000):
        n = int(rng.integers(4, 60))
        known = np.c_[rng.uniform(-1000, 1000, (n, 2)), rng.uniform(0, 30, n)]
        heard = known[rng.random(len(known)) < rng.uniform(0.1, 1.0)]
        if len(heard) == 0:
            continue
        source = np.r_[rng.uniform(-1500, 1500, 2), rng.uniform(0, 10)]
        hearing = float(rng.choice([100.0, 400.0, 700.0, 1200.0]))
        expected = association._heard_share_numpy(source, heard, known, hearing)
        assert association.heard_share(source, heard, known, hearing) == expected
        shares.add(expected)
    assert len(shares) > 200  # many distinct shares: not a constant
