"""Compiled kernel of the solver's single-problem fast path (numba, optional).

Why compiled: ``solver.locate`` runs once per window in the service; in numpy the fast path is
~40 small array calls (~110 µs a problem, each call ~1-2 µs of fixed overhead whatever the
size), compiled it is a few µs. The model is exactly ``solver._locate_fast``'s: closed-form
start at the first-arrival sensor's height, Huber Gauss-Newton with the soft height prior,
early exit once a step moves the source < 1 mm.

``KERNEL`` is None when numba is not installed; ``solver`` then keeps its numpy path. Compiled
lazily on first use and cached on disk (``cache=True``), so imports stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

try:  # optional accelerator: the numpy path gives the same answers
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None


def _chol_solve(m: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Solve the SPD 4x4 ``m x = b`` into ``out`` (Cholesky); False if not positive definite."""
    low = np.zeros((4, 4))
    for i in range(4):
        for j in range(i + 1):
            s = m[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            if i == j:
                if s <= 0.0:
                    return False
                low[i, i] = math.sqrt(s)
            else:
                low[i, j] = s / low[j, j]
    y = np.zeros(4)
    for i in range(4):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * y[k]
        y[i] = s / low[i, i]
    for i in range(3, -1, -1):
        s = y[i]
        for k in range(i + 1, 4):
            s -= low[k, i] * out[k]
        out[i] = s / low[i, i]
    return True


def _fast_fit(
    positions: np.ndarray, times: np.ndarray, c: float, huber: float, solve_3d: bool,
    inv_sz2: float, iterations: int, prior_floor: float, converged_m: float,
    theta: np.ndarray, r: np.ndarray, info: np.ndarray,
) -> tuple[int, float, float, float]:
    """Fill ``theta`` (4,: x, y, z, τ relative to the first arrival), ``r`` (n,) residuals (m)
    and ``info`` (4x4, height prior included); return (first arrival index, t_ref, Σr², max|r|).
    First index -1 = numerically singular (caller takes the robust path)."""
    n = times.shape[0]
    first = 0
    for i in range(n):
        if times[i] < times[first]:
            first = i
    t_ref = times[first]
    pos = np.empty((n, 3))
    rho = np.empty(n)
    for i in range(n):
        for k in range(3):
            pos[i, k] = positions[i, k] - positions[first, k]
        rho[i] = (times[i] - t_ref) * c
    # closed-form start: rows (-2x, -2y, 2ρ, 1 | ρ² - |s|²), normal equations
    m = np.zeros((4, 4))
    g = np.zeros(4)
    row = np.empty(4)
    for i in range(n):
        row[0] = -2.0 * pos[i, 0]
        row[1] = -2.0 * pos[i, 1]
        row[2] = 2.0 * rho[i]
        row[3] = 1.0
        y = rho[i] * rho[i] - (pos[i, 0] ** 2 + pos[i, 1] ** 2 + pos[i, 2] ** 2)
        for a in range(4):
            g[a] += row[a] * y
            for b in range(4):
                m[a, b] += row[a] * row[b]
    for a in range(4):
        m[a, a] += 1e-9
    sol = np.zeros(4)
    if not _chol_solve(m, g, sol):
        return -1, t_ref, 0.0, 0.0
    theta[0] = sol[0]
    theta[1] = sol[1]
    theta[2] = 0.0
    theta[3] = sol[2]
    jac = np.empty(4)
    step = np.zeros(4)
    rr = 0.0
    rmax = 0.0
    for it in range(iterations + 1):
        for a in range(4):
            g[a] = 0.0
            for b in range(4):
                m[a, b] = 0.0
        rr = 0.0
        rmax = 0.0
        for i in range(n):
            dx = theta[0] - pos[i, 0]
            dy = theta[1] - pos[i, 1]
            dz = theta[2] - pos[i, 2]
            dist = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-6)
            ri = rho[i] - dist - theta[3]
            r[i] = ri
            rr += ri * ri
            ar = abs(ri)
            if ar > rmax:
                rmax = ar
        for i in range(n):
            dx = theta[0] - pos[i, 0]
            dy = theta[1] - pos[i, 1]
            dz = theta[2] - pos[i, 2]
            dist = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-6)
            jac[0] = dx / dist
            jac[1] = dy / dist
            jac[2] = dz / dist if solve_3d else 0.0
            jac[3] = 1.0
            ar = abs(r[i])
            # Huber weight (all ones when every |r| <= huber, as the numpy path)
            w = 1.0 if rmax <= huber else min(1.0, huber / max(ar, 1e-12))
            for a in range(4):
                wa = w * jac[a]
                g[a] += wa * r[i]
                for b in range(4):
                    m[a, b] += wa * jac[b]
        lam = max(rr / n, prior_floor) * inv_sz2 if solve_3d else 0.0
        m[2, 2] += lam if solve_3d else 1.0
        if it == iterations:
            break
        g[2] -= lam * theta[2]
        for a in range(4):
            m[a, a] += 1e-12
        if not _chol_solve(m, g, step):
            return -1, t_ref, rr, rmax
        for a in range(4):
            m[a, a] -= 1e-12
        for a in range(4):
            theta[a] += step[a]
        if step[0] ** 2 + step[1] ** 2 + step[2] ** 2 < converged_m * converged_m:
            break  # as the numpy path: r and info are those of the previous iterate (< 1 mm)
    for a in range(4):
        for b in range(4):
            info[a, b] = m[a, b]
    return first, t_ref, rr, rmax


if njit is not None:
    _chol_solve = njit(cache=True)(_chol_solve)
KERNEL: Callable[..., tuple[int, float, float, float]] | None = (
    None if njit is None else njit(cache=True, nogil=True)(_fast_fit)
)
