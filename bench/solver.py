"""Solver speed and accuracy against peers, on real pulse sets (Pittsburgh 2018).

To isolate the solver from association, each problem is the vendor's own pulse set for one
shot (``nlos-tuples.json``; allowed here, never in the pipeline benchmark): 179 problems,
8-21 sensors each. All solvers get the same inputs (sensor x, y, z in metres centred on the
set's centroid; arrival times in seconds relative to the first) and the same speed of sound
(``shared.geo.speed_of_sound`` of the test's temperature). Error = horizontal distance to the
surveyed shooter position.

Solvers, in one process:

* ``ours`` — ``services.locator.solver.locate`` called once per problem (the path the service
  takes: one window at a time): a fast single-problem robust Gauss-Newton, falling back to the
  exact-triple consensus search when some arrival is inconsistent.
  ``ours_batched`` is ``locate_batch`` over all problems at once (vectorised).
* ``scipy`` — ``scipy.optimize.least_squares`` on the plain TOA model (x, y, z, T), started
  at the first-arrival sensor, analytic Jacobian, default trust-region reflective method.
* ``pyroomacoustics`` — ``pyroomacoustics.experimental.localization.tdoa_loc``: the
  closed-form TDOA solution of Steven Li (a published, widely used TDOA localiser).

Target: ours (single call) >= 2x the single-call solves/s of the fastest peer, with median
error no worse than scipy's.
Usage: ``python bench/solver.py [--data PATH] [--seconds 2]``; last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.locator.config import LocatorConfig
from services.locator.solver import locate, locate_batch
from shared.geo import speed_of_sound

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "pittsburgh-2018"


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def load_problems(data: Path) -> list[tuple[np.ndarray, np.ndarray, float, np.ndarray]]:
    """(positions (n,3) centred, times (n,) relative, c, survey xy centred) per vendor tuple."""
    problems = []
    for test_dir in sorted(data.glob("FP*/test_*")):
        name = test_dir.name
        pulses = {
            p["pulse_uuid"]: p
            for p in json.loads((test_dir / f"{name}.allpulses.json").read_text())
        }
        survey = json.loads((test_dir / f"{name}.survey.json").read_text())["survey_location"]
        temp = json.loads((test_dir / f"{name}.weather.json").read_text())["temperature"]
        for shot in json.loads((test_dir / f"{name}.nlos-tuples.json").read_text()):
            ps = [pulses[u] for u in shot["pulse_uuids"] if u in pulses]
            pos = np.array([[p["location"][k] for k in "xyz"] for p in ps], float)
            t = np.array([_ts(p["arrival_time_utc"]) for p in ps])
            centre = pos.mean(0)
            truth = np.array([survey["x"], survey["y"]]) - centre[:2]
            problems.append((pos - centre, t - t.min(), speed_of_sound(float(temp)), truth))
    return problems


def scipy_solve(pos: np.ndarray, t: np.ndarray, c: float) -> np.ndarray:
    from scipy.optimize import least_squares

    def f(v: np.ndarray) -> np.ndarray:
        return np.sqrt(((pos - v[:3]) ** 2).sum(1)) / c + v[3] - t

    def jac(v: np.ndarray) -> np.ndarray:
        d = v[:3] - pos
        n = np.maximum(np.sqrt((d * d).sum(1)), 1e-9)
        return np.c_[d / (n[:, None] * c), np.ones(len(t))]

    i = int(np.argmin(t))
    x0 = np.r_[pos[i], t[i]]
    return least_squares(f, x0, jac=jac).x[:3]


def pra_solve(pos: np.ndarray, t: np.ndarray, c: float) -> np.ndarray:
    from pyroomacoustics.experimental.localization import tdoa_loc

    return np.asarray(tdoa_loc(pos.T, t, c))[:3]


def timed(fn: Callable[[], list[np.ndarray | None]], n: int, seconds: float):
    """(solves/s, last results): repeat fn until ``seconds`` have passed (at least twice)."""
    fn()  # warm-up (imports, caches)
    reps, start = 0, time.perf_counter()
    while True:
        out = fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and reps >= 2:
            return reps * n / elapsed, out


def median_error(results: list[np.ndarray | None], problems) -> tuple[float, int]:
    errs = [
        float(np.hypot(*(r[:2] - p[3]))) if r is not None and np.all(np.isfinite(r)) else np.inf
        for r, p in zip(results, problems, strict=True)
    ]
    return float(np.median(errs)), sum(1 for e in errs if not np.isfinite(e))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SHOTLINE_PITTSBURGH_DATA", DEFAULT_DATA)),
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per solver")
    args = parser.parse_args()
    data = args.data.resolve()
    problems = load_problems(data) if data.is_dir() else []
    if not problems:
        print(
            f"Pittsburgh data not found at {data}. Pass --data PATH or set "
            "SHOTLINE_PITTSBURGH_DATA.",
            file=sys.stderr,
        )
        return 2
    config = LocatorConfig()
    n = len(problems)
    width = max(len(p[1]) for p in problems)
    pos_b = np.zeros((n, width, 3))
    t_b = np.zeros((n, width))
    valid = np.zeros((n, width), bool)
    for i, (pos, t, _, _) in enumerate(problems):
        pos_b[i, : len(t)], t_b[i, : len(t)], valid[i, : len(t)] = pos, t, True
    c_b = np.array([p[2] for p in problems])

    def ours_batched() -> list[np.ndarray | None]:
        fixes = locate_batch(pos_b, t_b, valid, c_b, config)
        return [None if f is None else f.position for f in fixes]

    def ours() -> list[np.ndarray | None]:
        out = []
        for pos, t, c, _ in problems:
            f = locate(pos, t, c, config)
            out.append(None if f is None else f.position)
        return out

    def peer(fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]):
        def run() -> list[np.ndarray | None]:
            return [fn(pos, t, c) for pos, t, c, _ in problems]

        return run

    solvers: dict[str, Callable[[], list[np.ndarray | None]]] = {
        "ours": ours,
        "ours_batched": ours_batched,
        "scipy": peer(scipy_solve),
    }
    try:
        import pyroomacoustics.experimental.localization  # noqa: F401

        solvers["pyroomacoustics"] = peer(pra_solve)
    except ImportError:
        print("pyroomacoustics not installed: peer skipped", file=sys.stderr)
    figures: dict[str, dict[str, float]] = {}
    for name, fn in solvers.items():
        rate, results = timed(fn, n, args.seconds)
        med, failed = median_error(results, problems)
        figures[name] = {"solves_per_s": round(rate, 1), "median_m": round(med, 2)}
        print(f"{name:16s} {rate:10.0f} solves/s   median error {med:6.2f} m   failed {failed}")
    peers = [v["solves_per_s"] for k, v in figures.items() if k not in ("ours", "ours_batched")]
    print(
        f"{n} problems; ours (single call) is {figures['ours']['solves_per_s'] / max(peers):.1f}x "
        "the fastest peer"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
