"""Compiled kernels of the solver's single-problem paths (numba, optional).

Why compiled: ``solver.locate`` runs once per window in the service; in numpy the fast path is
~40 small array calls (~110 µs a problem, each call ~1-2 µs of fixed overhead whatever the
size), compiled it is a few µs. The model is exactly ``solver._locate_fast``'s: closed-form
start at the first-arrival sensor's height, Huber Gauss-Newton with the soft height prior,
early exit once a step moves the source < 1 mm.

Problems with inconsistent arrivals (echoes, diffracted arrivals, bad clocks) fail that fast
path. In numpy their robust path is ``locate_batch`` with a batch of one, ~600 µs of call
overhead: on real data these few problems took most of ``locate``'s time. ``ROBUST_KERNEL`` is
that path for one problem (refinement, consensus over exact triples, refinement; ~5-20 µs),
making the batch path's decisions: its answers agree with ``locate_batch`` to rounding, and its
consensus hypotheses bit for bit (``tests/unit/locator/test_solver_jit.py``).

``KERNEL`` and ``ROBUST_KERNEL`` are None when numba is not installed; ``solver`` then keeps its
numpy paths. Compiled lazily on first use and cached on disk (``cache=True``), so imports stay
cheap.
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


def _recentre(
    positions: np.ndarray, times: np.ndarray, c: float
) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(first arrival index, its time, positions relative to its sensor, ranges (m) after it):
    the conditioning every solve starts with (metres and milliseconds, not km and epochs)."""
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
    return first, t_ref, pos, rho


def _fast_fit(
    positions: np.ndarray, times: np.ndarray, c: float, huber: float, solve_3d: bool,
    inv_sz2: float, iterations: int, prior_floor: float, converged_m: float,
    theta: np.ndarray, r: np.ndarray, info: np.ndarray,
) -> tuple[int, float, float, float]:
    """Fill ``theta`` (4,: x, y, z, τ relative to the first arrival), ``r`` (n,) residuals (m)
    and ``info`` (4x4, height prior included); return (first arrival index, t_ref, Σr², max|r|).
    First index -1 = numerically singular (caller takes the robust path)."""
    n = times.shape[0]
    first, t_ref, pos, rho = _recentre(positions, times, c)
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
    _recentre = njit(cache=True)(_recentre)
KERNEL: Callable[..., tuple[int, float, float, float]] | None = (
    None if njit is None else njit(cache=True, nogil=True)(_fast_fit)
)


# --- robust path: consensus + refinement for one problem -------------------------------------
#
# The same decisions as ``solver._locate_chunk`` with a batch of one, step for step: refine from
# the closed-form start; if too few arrivals end up consistent, exact-triple consensus (MSAC) over
# the earliest arrivals, refine from its best hypothesis and keep whichever uses more arrivals.
# Gauss-Newton runs the batch path's fixed iteration count (no early exit): it costs nothing next
# to the consensus search, and the consistent-set decisions then see the very same iterates.
# The consensus arithmetic is written in numpy's operation order (and its pairwise summation), so
# the MSAC costs are bit-identical and ties in the argmin resolve to the same hypothesis.

#: ``ROBUST_KERNEL`` status: a fix (theta, r, info, used, cov filled).
ROBUST_FIX = 1
#: ``ROBUST_KERNEL`` status: fewer than ``min_sensors`` consistent arrivals (or no finite answer).
ROBUST_NONE = 0
#: ``ROBUST_KERNEL`` status: a linear system was exactly singular or an input is not finite; the
#: numpy path decides (it would raise or propagate NaN where this kernel cannot follow it).
ROBUST_DEFER = -1


def _lu_solve4(m: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Solve the 4x4 ``m x = b`` into ``out`` by LU with partial pivoting (as LAPACK ``gesv``,
    which ``np.linalg.solve`` calls); False where a pivot is exactly zero (numpy would raise)."""
    a = m.copy()
    x = b.copy()
    for k in range(4):
        p = k
        big = abs(a[k, k])
        for i in range(k + 1, 4):
            if abs(a[i, k]) > big:  # first largest, as idamax
                big = abs(a[i, k])
                p = i
        if big == 0.0:
            return False
        if p != k:
            for j in range(4):
                tmp = a[k, j]
                a[k, j] = a[p, j]
                a[p, j] = tmp
            tmp = x[k]
            x[k] = x[p]
            x[p] = tmp
        for i in range(k + 1, 4):
            f = a[i, k] / a[k, k]
            for j in range(k + 1, 4):
                a[i, j] -= f * a[k, j]
            x[i] -= f * x[k]
    for i in range(3, -1, -1):
        s = x[i]
        for j in range(i + 1, 4):
            s -= a[i, j] * out[j]
        out[i] = s / a[i, i]
    return True


def _linear_start(pos: np.ndarray, rho: np.ndarray, theta: np.ndarray) -> bool:
    """``solver.linear_init`` for one problem (source height 0) into ``theta``; False if the
    normal equations are exactly singular."""
    n = rho.shape[0]
    m = np.zeros((4, 4))
    g = np.zeros(4)
    row = np.empty(4)
    for i in range(n):
        row[0] = -2.0 * pos[i, 0]
        row[1] = -2.0 * pos[i, 1]
        row[2] = 2.0 * rho[i]
        row[3] = 1.0
        y = rho[i] * rho[i] - pos[i, 0] ** 2 - pos[i, 1] ** 2 - pos[i, 2] ** 2
        for a in range(4):
            g[a] += row[a] * y
            for b in range(4):
                m[a, b] += row[a] * row[b]
    for a in range(4):
        m[a, a] += 1e-9
    sol = np.zeros(4)
    if not _lu_solve4(m, g, sol):
        return False
    theta[0] = sol[0]
    theta[1] = sol[1]
    theta[2] = 0.0
    theta[3] = sol[2]
    for a in range(4):  # linear_init replaces non-finite components by 0
        if not math.isfinite(theta[a]):
            theta[a] = 0.0
    return True


def _gauss_newton_used(
    pos: np.ndarray, rho: np.ndarray, used: np.ndarray, theta: np.ndarray, huber: float,
    solve_3d: bool, z_sigma2: float, iterations: int, prior_floor: float,
    r: np.ndarray, info: np.ndarray,
) -> bool:
    """``solver.gauss_newton`` for one problem with 0/1 weights ``used`` (height prior at 0):
    ``iterations`` steps from ``theta`` (updated in place), then ``r`` (all arrivals, m) and
    ``info`` (4x4, prior included) at the final iterate. False if a step's system is singular."""
    n = rho.shape[0]
    if not solve_3d:
        theta[2] = 0.0
    wsum = 0.0
    for i in range(n):
        if used[i]:
            wsum += 1.0
    wsum = max(wsum, 1.0)
    jac = np.empty(4)
    g = np.zeros(4)
    step = np.zeros(4)
    for it in range(iterations + 1):
        ss = 0.0
        for i in range(n):
            dx = pos[i, 0] - theta[0]
            dy = pos[i, 1] - theta[1]
            dz = pos[i, 2] - theta[2]
            dist = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-6)
            r[i] = rho[i] - theta[3] - dist
            if used[i]:
                ss += r[i] * r[i]
        # height prior weighted like one more observation (see solver.gauss_newton)
        lam = max(ss / wsum, prior_floor) / z_sigma2 if solve_3d else 0.0
        for a in range(4):
            g[a] = 0.0
            for b in range(4):
                info[a, b] = 0.0
        for i in range(n):
            if not used[i]:
                continue
            dx = theta[0] - pos[i, 0]
            dy = theta[1] - pos[i, 1]
            dz = theta[2] - pos[i, 2]
            dist = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-6)
            jac[0] = dx / dist
            jac[1] = dy / dist
            jac[2] = dz / dist if solve_3d else 0.0
            jac[3] = 1.0
            ar = abs(r[i])
            w = 1.0 if ar <= huber else huber / max(ar, 1e-12)
            for a in range(4):
                wa = w * jac[a]
                g[a] += wa * r[i]
                for b in range(4):
                    info[a, b] += wa * jac[b]
        info[2, 2] += lam if solve_3d else 1.0  # 2-D: z pinned at the prior
        if it == iterations:
            return True
        g[2] -= lam * theta[2]
        for a in range(4):
            info[a, a] += 1e-12
        ok = _lu_solve4(info, g, step)
        for a in range(4):
            info[a, a] -= 1e-12
        if not ok:
            return False
        for a in range(4):
            theta[a] += step[a]
    return True


def _refine_one(
    pos: np.ndarray, rho: np.ndarray, theta: np.ndarray, tol_m: float, huber: float,
    solve_3d: bool, z_sigma2: float, iterations: int, prior_floor: float,
    r: np.ndarray, info: np.ndarray, used: np.ndarray,
) -> bool:
    """``solver.refine`` for one problem: fit all arrivals, then at most twice re-select the
    consistent set ``|r| <= tol_m`` and refit until it stops changing. Fills theta, r, info,
    used; False if a system was singular."""
    n = rho.shape[0]
    for i in range(n):
        used[i] = True
    if not _gauss_newton_used(pos, rho, used, theta, huber, solve_3d, z_sigma2, iterations,
                              prior_floor, r, info):
        return False
    for _ in range(2):
        same = True
        for i in range(n):
            if (abs(r[i]) <= tol_m) != used[i]:
                same = False
        if same:
            break
        for i in range(n):
            used[i] = abs(r[i]) <= tol_m
        if not _gauss_newton_used(pos, rho, used, theta, huber, solve_3d, z_sigma2,
                                  iterations, prior_floor, r, info):
            return False
    return True


def numpy_sum(x: np.ndarray, n: int) -> float:
    """``x[:n].sum()`` in numpy's order (pairwise: eight running sums from n = 8 on), so that
    equal costs here are equal costs there."""
    if n < 8:
        s = 0.0
        for i in range(n):
            s += x[i]
        return s
    if n > 128:  # numpy splits larger blocks in halves (multiples of 8)
        half = n // 2
        half -= half % 8
        return numpy_sum(x, half) + numpy_sum(x[half:], n - half)
    acc = np.empty(8)
    for j in range(8):
        acc[j] = x[j]
    top = n - n % 8
    for i in range(8, top, 8):
        for j in range(8):
            acc[j] += x[i + j]
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for i in range(top, n):
        s += x[i]
    return s


def triple_roots(
    pos: np.ndarray, rho: np.ndarray, i0: int, i1: int, i2: int
) -> tuple[bool, bool, float, float, float, float, float, float, float, float, float]:
    """The two exact sources through arrivals i0, i1, i2 with the source at height 0, exactly
    as ``solver.triple_hypotheses_one`` computes them (one triple, plain floats).

    Returns (good, linear, x0, y0, ρ0, ux, uy, vx, vy, σ1, σ2): root k is at
    (x0 + ux + vx·σk, y0 + uy + vy·σk) emitting at τ = ρ0 + σk; ``good`` False = degenerate
    or complex; ``linear`` = one root only (σ1 = σ2). Shared by the solver's and the
    association's consensus kernels.
    """
    x0 = pos[i0, 0]
    y0 = pos[i0, 1]
    a1x = pos[i1, 0] - x0
    a1y = pos[i1, 1] - y0
    a2x = pos[i2, 0] - x0
    a2y = pos[i2, 1] - y0
    r0 = rho[i0]
    r1 = rho[i1] - r0
    r2 = rho[i2] - r0
    k0 = pos[i0, 2] * pos[i0, 2]
    k1 = pos[i1, 2] * pos[i1, 2]
    k2 = pos[i2, 2] * pos[i2, 2]
    n1 = a1x * a1x + a1y * a1y
    n2 = a2x * a2x + a2y * a2y
    b1 = 0.5 * (n1 + k1 - k0 - r1 * r1)
    b2 = 0.5 * (n2 + k2 - k0 - r2 * r2)
    det = a1x * a2y - a1y * a2x
    good = abs(det) > 1e-3 * (n1 + n2)
    inv = 1.0 / det if good else 0.0
    ux = (a2y * b1 - a1y * b2) * inv
    uy = (-a2x * b1 + a1x * b2) * inv
    vx = (a2y * r1 - a1y * r2) * inv
    vy = (-a2x * r1 + a1x * r2) * inv
    qa = vx * vx + vy * vy - 1.0
    qb = 2.0 * (ux * vx + uy * vy)
    qc = ux * ux + uy * uy + k0
    disc = qb * qb - 4.0 * qa * qc
    good = good and disc >= 0.0
    sq = math.sqrt(max(disc, 0.0))
    lin = abs(qa) < 1e-9
    if lin:
        s_lin = -qc / qb if abs(qb) > 1e-12 else 1.0
        return good, lin, x0, y0, r0, ux, uy, vx, vy, s_lin, s_lin
    return good, lin, x0, y0, r0, ux, uy, vx, vy, (-qb + sq) / (2.0 * qa), (-qb - sq) / (2.0 * qa)


def _consensus_one(
    pos: np.ndarray, rho: np.ndarray, tol_m: float, max_seeds: int, theta: np.ndarray
) -> bool:
    """``solver._consensus`` for one problem: the best exact-triple hypothesis (source height 0)
    by MSAC cost into ``theta``; returns ``found`` (its cost is finite).

    Triples of the ``min(n, max_seeds)`` earliest arrivals in ``itertools.combinations`` order,
    both roots of each computed as ``solver.triple_hypotheses`` does; hypothesis h = root·K + k
    as there, so the first minimum (``np.argmin``, NaN first) is the same hypothesis."""
    n = rho.shape[0]
    m = min(n, max_seeds)
    # stable argsort of the arrivals (insertion sort: n is a few dozen at most)
    order = np.empty(n, np.int64)
    for i in range(n):
        j = i
        while j > 0 and rho[order[j - 1]] > rho[i]:
            order[j] = order[j - 1]
            j -= 1
        order[j] = i
    kk = m * (m - 1) * (m - 2) // 6
    cost = np.empty(2 * kk)
    hx = np.empty(2 * kk)
    hy = np.empty(2 * kk)
    htau = np.empty(2 * kk)
    t2 = tol_m * tol_m
    terms = np.empty(n)
    k = 0
    for ia in range(m):
        for ib in range(ia + 1, m):
            for ic in range(ib + 1, m):
                i0 = order[ia]
                i1 = order[ib]
                i2 = order[ic]
                good, lin, a0x, a0y, r0, ux, uy, vx, vy, s_a, s_b = triple_roots(
                    pos, rho, i0, i1, i2
                )
                for root in range(2):
                    sig = s_a if root == 0 else s_b
                    h = root * kk + k
                    px = a0x + ux + vx * sig
                    py = a0y + uy + vy * sig
                    tau = r0 + sig
                    hx[h] = px
                    hy[h] = py
                    htau[h] = tau
                    if not (good and (root == 0 or not lin) and sig <= 1e-6):
                        cost[h] = np.inf
                        continue
                    for i in range(n):
                        dx = px - pos[i, 0]
                        dy = py - pos[i, 1]
                        dz = 0.0 - pos[i, 2]
                        e = rho[i] - tau - math.sqrt(dx * dx + dy * dy + dz * dz)
                        q = e * e
                        if q > t2:  # MSAC truncation (NaN stays NaN, as np.minimum)
                            q = t2
                        terms[i] = q
                    cost[h] = numpy_sum(terms, n)
                k += 1
    best = 0
    for h in range(2 * kk):  # np.argmin: the first NaN, else the first minimum
        if math.isnan(cost[h]):
            best = h
            break
        if cost[h] < cost[best]:
            best = h
    theta[0] = hx[best]
    theta[1] = hy[best]
    theta[2] = 0.0
    theta[3] = htau[best]
    return math.isfinite(cost[best])


def _robust_fit(
    positions: np.ndarray, times: np.ndarray, c: float, tol_m: float, huber: float,
    solve_3d: bool, z_sigma2: float, iterations: int, prior_floor: float, min_sensors: int,
    max_seeds: int, sigma_floor2: float,
    theta: np.ndarray, r: np.ndarray, info: np.ndarray, used: np.ndarray, cov: np.ndarray,
) -> tuple[int, int, float, int, float]:
    """``solver._locate_chunk`` for one problem (every arrival valid).

    Fills ``theta`` (4,: x, y, z relative to the first-arrival sensor, τ relative to its time,
    m), ``r`` (n,) residuals (m), ``info`` (4x4), ``used`` (n,) and the horizontal covariance
    ``cov`` (2x2, m²). Returns (status, first arrival index, t_ref, arrivals used, Σ used r²);
    status is ``ROBUST_FIX``, ``ROBUST_NONE`` (the batch path returns None) or ``ROBUST_DEFER``
    (a system was exactly singular or an input not finite: let the numpy path decide).
    """
    n = times.shape[0]
    for i in range(n):
        if not math.isfinite(times[i]):
            return ROBUST_DEFER, 0, 0.0, 0, 0.0
        for k in range(3):
            if not math.isfinite(positions[i, k]):
                return ROBUST_DEFER, 0, 0.0, 0, 0.0
    first, t_ref, pos, rho = _recentre(positions, times, c)
    if not _linear_start(pos, rho, theta):
        return ROBUST_DEFER, first, t_ref, 0, 0.0
    if not _refine_one(pos, rho, theta, tol_m, huber, solve_3d, z_sigma2, iterations,
                       prior_floor, r, info, used):
        return ROBUST_DEFER, first, t_ref, 0, 0.0
    n_used = 0
    for i in range(n):
        if used[i]:
            n_used += 1
    finite = True
    for a in range(4):
        finite = finite and math.isfinite(theta[a])
    # consensus only where some arrival was found inconsistent (as _locate_chunk's ``bad``)
    if n_used < max(min_sensors, math.ceil(0.75 * n)) or not finite:
        th_c = np.empty(4)
        found = _consensus_one(pos, rho, tol_m, max_seeds, th_c)
        r_c = np.empty(n)
        info_c = np.empty((4, 4))
        used_c = np.empty(n, np.bool_)
        if not _refine_one(pos, rho, th_c, tol_m, huber, solve_3d, z_sigma2, iterations,
                           prior_floor, r_c, info_c, used_c):
            return ROBUST_DEFER, first, t_ref, 0, 0.0
        n_c = 0
        for i in range(n):
            if used_c[i]:
                n_c += 1
        if (found and n_c > n_used) or not finite:
            theta[:] = th_c
            r[:] = r_c
            info[:, :] = info_c
            used[:] = used_c
            n_used = n_c
    ru2 = 0.0
    for i in range(n):
        if used[i]:
            ru2 += r[i] * r[i]
    finite = True
    for a in range(4):
        finite = finite and math.isfinite(theta[a])
    if n_used < min_sensors or not finite:
        return ROBUST_NONE, first, t_ref, n_used, ru2
    # covariance: first two columns of info⁻¹ (as np.linalg.inv, LU), times s²
    dof = max(n_used - (4 if solve_3d else 3), 1)
    s2 = max(ru2 / dof, sigma_floor2)
    e = np.zeros(4)
    col = np.empty(4)
    for j in range(2):
        e[:] = 0.0
        e[j] = 1.0
        if not _lu_solve4(info, e, col):
            return ROBUST_DEFER, first, t_ref, n_used, ru2
        cov[0, j] = col[0] * s2
        cov[1, j] = col[1] * s2
    return ROBUST_FIX, first, t_ref, n_used, ru2


ROBUST_KERNEL: Callable[..., tuple[int, int, float, int, float]] | None = None
if njit is not None:
    # error_model="numpy": degenerate data gives inf/NaN as in the numpy path, never an exception
    _robust_jit = njit(cache=True, error_model="numpy")
    triple_roots = _robust_jit(triple_roots)
    _lu_solve4 = _robust_jit(_lu_solve4)
    _linear_start = _robust_jit(_linear_start)
    _gauss_newton_used = _robust_jit(_gauss_newton_used)
    _refine_one = _robust_jit(_refine_one)
    numpy_sum = _robust_jit(numpy_sum)
    _consensus_one = _robust_jit(_consensus_one)
    ROBUST_KERNEL = njit(cache=True, nogil=True, error_model="numpy")(_robust_fit)
