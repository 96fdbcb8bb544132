"""Compiled core of :func:`services.locator.association.associate` (numba, optional).

Why compiled: the engine decides every pulse with one ``associate`` call, and in numpy each call
is ~150 small array operations (gate, pair list, triple roots, (H, P) residual matrices,
per-sensor ``reduceat``, Gauss-Newton) at ~1-2 µs of fixed overhead each, whatever the size.
Compiled, the same arithmetic runs in a few µs for the common small windows.

:data:`CORE` runs the whole decision of ``associate`` up to (and including) the final robust
fit, with the same steps, rules and hypothesis order as the numpy functions of ``association``
(gate, consensus through the seed, refinement, guard against a bad seed, final pulse set); the
caller only builds the :class:`~services.locator.solver.Fix` and applies the heard-share test.
Sensors are grouped by integer group ids ranked by sensor code, which is the order of the numpy
path's per-sensor ``reduceat`` (so MSAC costs are summed over sensors in the same order, with
numpy's pairwise summation, and equal costs stay equal: ties resolve to the same hypothesis).
Gauss-Newton is a private copy of ``solver.gauss_newton_one`` (unit weights then Huber, height
prior, 4x4 Cholesky, early exit after a step < 1 mm); its sums may differ from numpy's BLAS in
the last bit, far below any decision threshold.

``CORE`` is None when numba is not installed; ``association`` then keeps its numpy path, which
gives the same answers. Compiled lazily on first use and cached on disk (``cache=True``): the
first call in a fresh environment compiles for ~10 s, later processes load the cache in < 1 s.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# numpy's pairwise summation order, so that costs equal there are equal here (shared with the
# solver's kernels; compiled there when numba is present)
from services.locator.solver_jit import numpy_sum, triple_roots

try:  # optional accelerator: the numpy path gives the same answers
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

#: ``CORE`` status: the seed's source was found; the outputs are filled.
STATUS_FIX = 1
#: ``CORE`` status: the seed is noise (``associate`` returns None).
STATUS_NONE = 0
#: ``CORE`` status: an input is not finite; the numpy path decides (and behaves as it always did).
STATUS_DEFER = -1
#: Smallest residual variance (m²) that weights the height prior (as ``solver``'s).
PRIOR_FLOOR_M2 = 1e-6
#: Gauss-Newton has converged once a step moves the source less than this (m; as ``solver``'s).
CONVERGED_M = 1e-3

#: What ``CORE`` returns: (status, pulses, used, theta, info, residuals, three_d).
CoreResult = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]


def _dist3(pos: np.ndarray, i: int, x: float, y: float, z: float) -> float:
    """|pos[i] - (x, y, z)| summed as numpy's ``((a - b) ** 2).sum(-1)``."""
    dx = pos[i, 0] - x
    dy = pos[i, 1] - y
    dz = pos[i, 2] - z
    return math.sqrt(dx * dx + dy * dy + dz * dz)


def _consensus(
    pos: np.ndarray, rho: np.ndarray, gid: np.ndarray, n_groups: int, t0: np.ndarray,
    t1: np.ndarray, t2: np.ndarray, n_tri: int, tol_m: float, max_range2: float,
    exclude_seed: bool, theta: np.ndarray,
) -> bool:
    """``association._consensus_theta``: the best exact-triple hypothesis (x, y, 0, τ) by
    per-sensor MSAC cost into ``theta``; False if no triple gives a usable root.

    Roots as ``solver.triple_hypotheses_one`` (same formulas, same validity rules) plus the
    ``|p| <= max_range`` filter; hypothesis order = every triple's first root, then every
    triple's second root, and the first minimum wins (``np.argmin``: a NaN cost first).
    Costs are never materialised as an (H, P) matrix: one hypothesis at a time.
    """
    n = rho.shape[0]
    z2 = np.empty(n)
    for i in range(n):
        z2[i] = pos[i, 2] ** 2
    # per-triple closed form (both roots share everything but the sign before sqrt(disc))
    a0x = np.empty(n_tri)
    a0y = np.empty(n_tri)
    r0 = np.empty(n_tri)
    ux = np.empty(n_tri)
    uy = np.empty(n_tri)
    vx = np.empty(n_tri)
    vy = np.empty(n_tri)
    s_a = np.empty(n_tri)
    s_b = np.empty(n_tri)
    good = np.empty(n_tri, np.bool_)
    lin = np.empty(n_tri, np.bool_)
    for k in range(n_tri):
        i0 = t0[k]
        i1 = t1[k]
        i2 = t2[k]
        g, is_lin, x0, y0, rr0, kux, kuy, kvx, kvy, sa, sb = triple_roots(pos, rho, i0, i1, i2)
        s_a[k] = sa
        s_b[k] = sb
        a0x[k] = x0
        a0y[k] = y0
        r0[k] = rr0
        ux[k] = kux
        uy[k] = kuy
        vx[k] = kvx
        vy[k] = kvy
        good[k] = g
        lin[k] = is_lin
    mins = np.empty(n_groups)
    sq_mins = np.empty(n_groups)
    best_cost = math.inf
    best_nan = False
    found = False
    for root in range(2):
        for k in range(n_tri):
            sig = s_a[k] if root == 0 else s_b[k]
            if not (good[k] and (root == 0 or not lin[k]) and sig <= 1e-6):
                continue
            px = a0x[k] + ux[k] + vx[k] * sig
            py = a0y[k] + uy[k] + vy[k] * sig
            if not px * px + py * py <= max_range2:
                continue
            tau = r0[k] + sig
            for s in range(n_groups):
                mins[s] = math.inf
            for i in range(n):
                if exclude_seed and i == 0:
                    e = math.inf
                else:
                    dx = px - pos[i, 0]
                    dy = py - pos[i, 1]
                    e = abs(rho[i] - tau - math.sqrt(dx * dx + dy * dy + z2[i]))
                # MSAC truncation, then the per-sensor min; both keep a NaN (as np.minimum)
                if not (e < tol_m or math.isnan(e)):
                    e = tol_m
                s = gid[i]
                if e < mins[s] or math.isnan(e):
                    mins[s] = e
            for s in range(n_groups):
                sq_mins[s] = mins[s] * mins[s]
            cost = numpy_sum(sq_mins, n_groups)
            if best_nan:
                continue  # np.argmin returns the first NaN
            if not found or cost < best_cost or math.isnan(cost):
                found = True
                best_cost = cost
                best_nan = math.isnan(cost)
                theta[0] = px
                theta[1] = py
                theta[2] = 0.0
                theta[3] = tau
    return found


def _chol_solve4(m: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """``solver._solve4``: the SPD 4x4 ``m x = b`` (upper triangle read) by Cholesky into
    ``out``; False if ``m`` is not numerically positive definite."""
    if m[0, 0] <= 0.0:
        return False
    l00 = math.sqrt(m[0, 0])
    l10 = m[0, 1] / l00
    l20 = m[0, 2] / l00
    l30 = m[0, 3] / l00
    d1 = m[1, 1] - l10 * l10
    if d1 <= 0.0:
        return False
    l11 = math.sqrt(d1)
    l21 = (m[1, 2] - l20 * l10) / l11
    l31 = (m[1, 3] - l30 * l10) / l11
    d2 = m[2, 2] - l20 * l20 - l21 * l21
    if d2 <= 0.0:
        return False
    l22 = math.sqrt(d2)
    l32 = (m[2, 3] - l30 * l20 - l31 * l21) / l22
    d3 = m[3, 3] - l30 * l30 - l31 * l31 - l32 * l32
    if d3 <= 0.0:
        return False
    l33 = math.sqrt(d3)
    y0 = b[0] / l00
    y1 = (b[1] - l10 * y0) / l11
    y2 = (b[2] - l20 * y0 - l21 * y1) / l22
    y3 = (b[3] - l30 * y0 - l31 * y1 - l32 * y2) / l33
    out[3] = y3 / l33
    out[2] = (y2 - l32 * out[3]) / l22
    out[1] = (y1 - l21 * out[2] - l31 * out[3]) / l11
    out[0] = (y0 - l10 * out[1] - l20 * out[2] - l30 * out[3]) / l00
    return True


def _gauss_newton(
    pos: np.ndarray, rho: np.ndarray, idx: np.ndarray, n: int, start: np.ndarray,
    iterations: int, solve_3d: bool, huber: float, inv_sz2: float, prior_floor: float,
    converged_m: float, th: np.ndarray, info: np.ndarray,
) -> None:
    """``solver.gauss_newton_one`` on the pulses ``idx[:n]``: robust fit from ``start`` into
    ``th`` (4,) and the information matrix (height prior included) into ``info`` (4x4).

    Same model and stopping rules: unit weights unless some |r| > ``huber`` (then Huber
    weights), 2-D pins z at 0 (information +1 on z), 3-D weights the height prior like one
    more observation (``max(Σr²/n, prior_floor) / σz²``), +1e-12 on the diagonal for the
    solve, stop after ``iterations`` steps, a singular system, or once a step moved the
    source < ``converged_m`` (information then evaluated at the final θ, as there).
    """
    for a in range(4):
        th[a] = start[a]
    if not solve_3d:
        th[2] = 0.0
    jac = np.empty((n, 4))
    r = np.empty(n)
    w = np.empty(n)
    m = np.empty((4, 4))
    g = np.empty(4)
    step = np.empty(4)
    converged = False
    for it in range(iterations + 1):
        rmax = 0.0
        for k in range(n):
            i = idx[k]
            dx = th[0] - pos[i, 0]
            dy = th[1] - pos[i, 1]
            dz = th[2] - pos[i, 2]
            dist = math.sqrt(dx * dx + dy * dy + dz * dz)
            if dist < 1e-6:
                dist = 1e-6
            jac[k, 0] = dx / dist
            jac[k, 1] = dy / dist
            jac[k, 2] = dz / dist if solve_3d else 0.0
            jac[k, 3] = 1.0
            r[k] = rho[i] - dist - th[3]  # observed - predicted
            rmax = max(rmax, abs(r[k]))
        for k in range(n):
            w[k] = min(1.0, huber / max(abs(r[k]), 1e-12)) if rmax > huber else 1.0
        rr = 0.0
        for a in range(4):
            g[a] = 0.0
            for b in range(4):
                m[a, b] = 0.0
        for k in range(n):
            rr += r[k] * r[k]
            rw = r[k] * w[k]
            for a in range(4):
                ja = jac[k, a] * w[k]
                g[a] += rw * jac[k, a]  # Jᵀ W r (∂f/∂θ = jac for f = -r)
                for b in range(4):
                    m[a, b] += ja * jac[k, b]
        lam = max(rr / max(n, 1), prior_floor) * inv_sz2 if solve_3d else 0.0
        m[2, 2] += lam if solve_3d else 1.0
        if it == iterations or converged:
            break
        g[2] -= lam * th[2]
        for a in range(4):
            m[a, a] += 1e-12
        if not _chol_solve4(m, g, step):
            break  # as gauss_newton_one: keep the current iterate (information with the 1e-12)
        for a in range(4):
            th[a] += step[a]
        converged = step[0] ** 2 + step[1] ** 2 + step[2] ** 2 < converged_m**2
    for a in range(4):
        for b in range(4):
            info[a, b] = m[a, b]


def _insertion_sort(x: np.ndarray, n: int) -> None:
    """Sort ``x[:n]`` in place. Why not ``np.sort``: n is a sensor count (tens), and numba's
    generic sort costs seconds of compile time for nothing."""
    for i in range(1, n):
        v = x[i]
        j = i
        while j > 0 and x[j - 1] > v:
            x[j] = x[j - 1]
            j -= 1
        x[j] = v


def _group_ids(codes: np.ndarray, pool: np.ndarray, n: int, gid: np.ndarray) -> int:
    """Group id of every pool pulse, 0..S-1 by ascending sensor code (the numpy path's
    ``lexsort`` + ``reduceat`` group order), into ``gid``; returns S. O(n·S), S is tens."""
    uniq = np.empty(n, np.int64)
    n_u = 0
    for k in range(n):
        code = codes[pool[k]]
        seen = False
        for u in range(n_u):
            if uniq[u] == code:
                seen = True
                break
        if not seen:
            uniq[n_u] = code
            n_u += 1
    _insertion_sort(uniq, n_u)
    for k in range(n):
        code = codes[pool[k]]
        for u in range(n_u):
            if uniq[u] == code:
                gid[k] = u
                break
    return n_u


def _select(
    pos: np.ndarray, rho: np.ndarray, gid: np.ndarray, n_groups: int, theta: np.ndarray,
    gate_m: float, exclude_seed: bool, out: np.ndarray,
) -> int:
    """Per sensor, the pulse with the smallest |residual| under ``theta`` (ties: the lowest
    pulse index), kept if that |residual| <= ``gate_m``; the kept pulse indices, ascending,
    into ``out``. Returns their count. (``_best_per_sensor`` + mask + ``np.sort``.)"""
    n = rho.shape[0]
    best_v = np.empty(n_groups)
    best_i = np.empty(n_groups, np.int64)
    for s in range(n_groups):
        best_v[s] = math.inf
    for i in range(n):
        if exclude_seed and i == 0:
            continue  # its |residual| is +inf: never a sensor's best, never kept
        e = abs(rho[i] - theta[3] - _dist3(pos, i, theta[0], theta[1], theta[2]))
        s = gid[i]
        if e < best_v[s]:
            best_v[s] = e
            best_i[s] = i
    count = 0
    for s in range(n_groups):
        if best_v[s] <= gate_m:
            out[count] = best_i[s]
            count += 1
    _insertion_sort(out, count)
    return count


def _refine(
    pos: np.ndarray, rho: np.ndarray, gid: np.ndarray, n_groups: int, theta: np.ndarray,
    tol_m: float, exclude_seed: bool, iterations: int, huber: float, inv_sz2: float,
    prior_floor: float, converged_m: float, members: np.ndarray,
) -> int:
    """``association._refine_members``: select the best pulse per consistent sensor, fit (2-D),
    re-select, ... (at most 3 passes, stop when the set repeats). ``theta`` is updated in place,
    the members (ascending pulse indices) go to ``members``; returns their count, or -1 where
    the numpy function returns None (fewer than 3 members, or a non-finite fit)."""
    n = rho.shape[0]
    new = np.empty(n, np.int64)
    th = np.empty(4)
    info = np.empty((4, 4))
    count = -1
    for _ in range(3):
        n_new = _select(pos, rho, gid, n_groups, theta, tol_m, exclude_seed, new)
        if n_new < 3:
            return -1
        if n_new == count:
            same = True
            for k in range(count):
                if new[k] != members[k]:
                    same = False
                    break
            if same:
                break
        count = n_new
        for k in range(count):
            members[k] = new[k]
        _gauss_newton(pos, rho, members, count, theta, iterations, False, huber, inv_sz2,
                      prior_floor, converged_m, th, info)
        for a in range(4):
            if not math.isfinite(th[a]):
                return -1
        for a in range(4):
            theta[a] = th[a]
    return count


def _seed_survives_guard(
    pos: np.ndarray, rho: np.ndarray, gid: np.ndarray, n_groups: int, members: np.ndarray,
    n_members: int, tol_m: float, max_range2: float, guard_members: int, iterations: int,
    huber: float, inv_sz2: float, prior_floor: float, converged_m: float,
) -> bool:
    """``association._seed_survives_guard``: False if the fit's other pulses (the first
    ``guard_members`` non-seed members), without the seed, support a source that uses more
    pulses and leaves the seed out."""
    others = np.empty(guard_members, np.int64)
    n_o = 0
    for k in range(n_members):
        if members[k] != 0 and n_o < guard_members:
            others[n_o] = members[k]
            n_o += 1
    if n_o < 3:
        return True
    n_tri = n_o * (n_o - 1) * (n_o - 2) // 6
    t0 = np.empty(n_tri, np.int64)
    t1 = np.empty(n_tri, np.int64)
    t2 = np.empty(n_tri, np.int64)
    k = 0
    for x in range(n_o):  # itertools.combinations order
        for y in range(x + 1, n_o):
            for z in range(y + 1, n_o):
                t0[k] = others[x]
                t1[k] = others[y]
                t2[k] = others[z]
                k += 1
    alt = np.empty(4)
    if not _consensus(pos, rho, gid, n_groups, t0, t1, t2, n_tri, tol_m, max_range2, True, alt):
        return True
    alt_members = np.empty(rho.shape[0], np.int64)
    n_alt = _refine(pos, rho, gid, n_groups, alt, tol_m, True, iterations, huber, inv_sz2,
                    prior_floor, converged_m, alt_members)
    if n_alt < 0:
        return True
    seed_fits = abs(rho[0] - alt[3] - _dist3(pos, 0, alt[0], alt[1], alt[2])) <= tol_m
    return seed_fits or n_alt <= n_members


def _associate_core(
    positions: np.ndarray, times: np.ndarray, codes: np.ndarray, seed: int, c: float,
    tol_s: float, max_range_m: float, min_sensors: int, health_gate_s: float,
    n_candidates: int, guard_members: int, iterations: int, huber: float, inv_sz2: float,
    prior_floor: float, converged_m: float, solve_3d: bool, min_sensors_3d: int,
) -> CoreResult:
    """The decision of ``association.associate`` for one seed, up to the final fit.

    ``positions`` (M, 3), ``times`` (M,), ``codes`` (M,) integer sensor codes (any integers:
    grouped and ordered by value), ``seed`` index. Returns (status, pulses (K,) indices into
    the caller's arrays, used (K,), theta (4,) relative to ``positions[seed]`` and
    ``times[seed]``, info (4x4), residuals (K,) m, three_d). Only a ``STATUS_FIX`` carries
    meaningful arrays; ``STATUS_NONE`` = noise, ``STATUS_DEFER`` = a non-finite input.
    """
    m_all = times.shape[0]
    no_i = np.empty(0, np.int64)
    no_b = np.empty(0, np.bool_)
    no_f = np.empty(0)
    no_m = np.empty((4, 4))
    nothing = (STATUS_NONE, no_i, no_b, no_f, no_m, no_f, False)
    for i in range(m_all):
        finite = math.isfinite(times[i])
        for a in range(3):
            finite = finite and math.isfinite(positions[i, a])
        if not finite:
            return STATUS_DEFER, no_i, no_b, no_f, no_m, no_f, False
    tol_m = tol_s * c
    t_seed = times[seed]
    code0 = codes[seed]
    # the gate (association.gate), the physics bound and the wider health bound at once:
    # the pool is the seed and every pulse within the health bound; ``possible`` marks those
    # within the physics bound (health_gate_s >= 0, so they are all in the pool)
    pool = np.empty(m_all, np.int64)
    possible = np.empty(m_all, np.bool_)
    pool[0] = seed
    possible[0] = True
    n = 1
    for i in range(m_all):
        if codes[i] == code0:
            continue
        dt = times[i] - t_seed
        if not dt >= -1e-9:
            continue
        sep = _dist3(positions, i, positions[seed, 0], positions[seed, 1], positions[seed, 2])
        bound = min(sep, max_range_m) / c + tol_s
        if dt <= bound + health_gate_s:
            pool[n] = i
            possible[n] = dt <= bound
            n += 1
    pool = pool[:n]  # pool index 0 is the seed
    # sensors as group ids 0..S-1 in ascending code order (the numpy path's reduceat order)
    gid = np.empty(n, np.int64)
    n_groups = _group_ids(codes, pool, n, gid)
    # cheap exit: too few sensors could have heard the seed's source (every pulse within the
    # physics bound is in the pool, so its distinct sensors are groups with a possible pulse)
    heard = np.zeros(n_groups, np.bool_)
    for k in range(1, n):
        if possible[k]:
            heard[gid[k]] = True
    distinct = 0
    for s in range(n_groups):
        if heard[s]:
            distinct += 1
    if distinct < min_sensors - 1:
        return nothing
    pos = np.empty((n, 3))
    rho = np.empty(n)
    for k in range(n):
        i = pool[k]
        for a in range(3):
            pos[k, a] = positions[i, a] - positions[seed, a]
        rho[k] = (times[i] - t_seed) * c

    # pairs of possible candidates at two distinct sensors, mutually possible: the
    # candidates at the sensors nearest the seed's first (association.CONSENSUS_CANDIDATES)
    cand = np.empty(n, np.int64)
    cand_sep = np.empty(n)
    n_cand = 0
    for k in range(1, n):
        if possible[k]:
            cand[n_cand] = k
            cand_sep[n_cand] = math.sqrt(pos[k, 0] ** 2 + pos[k, 1] ** 2 + pos[k, 2] ** 2)
            n_cand += 1
    order = np.argsort(cand_sep[:n_cand], kind="mergesort")
    n_early = min(n_cand, n_candidates)
    early = np.sort(cand[:n_cand][order[:n_early]])
    if n_early < 2:
        return nothing
    n_pairs = n_early * (n_early - 1) // 2
    t0 = np.zeros(n_pairs, np.int64)
    t1 = np.empty(n_pairs, np.int64)
    t2 = np.empty(n_pairs, np.int64)
    n_tri = 0
    for a in range(n_early):  # np.triu_indices order
        for b in range(a + 1, n_early):
            i = early[a]
            j = early[b]
            if gid[i] == gid[j]:
                continue
            sep_ij = _dist3(pos, i, pos[j, 0], pos[j, 1], pos[j, 2])
            if abs(rho[i] - rho[j]) <= sep_ij + tol_m:
                t1[n_tri] = i
                t2[n_tri] = j
                n_tri += 1
    if n_tri == 0:
        return nothing
    max_range2 = max_range_m**2
    theta = np.empty(4)
    if not _consensus(pos, rho, gid, n_groups, t0, t1, t2, n_tri, tol_m, max_range2, False,
                      theta):
        return nothing
    members = np.empty(n, np.int64)
    n_members = _refine(pos, rho, gid, n_groups, theta, tol_m, False, iterations, huber,
                        inv_sz2, prior_floor, converged_m, members)
    if n_members < 0 or n_members < min_sensors or members[0] != 0:
        return nothing  # members ascend: the seed (pool index 0) is first if present
    if not _seed_survives_guard(pos, rho, gid, n_groups, members, n_members, tol_m,
                                max_range2, guard_members, iterations, huber, inv_sz2,
                                prior_floor, converged_m):
        return nothing

    # final set: the closest pulse of every sensor within the health gate
    chosen = np.empty(n, np.int64)
    n_chosen = _select(pos, rho, gid, n_groups, theta, health_gate_s * c, False, chosen)
    chosen = chosen[:n_chosen]
    used = np.empty(n_chosen, np.bool_)
    fit_idx = np.empty(n_chosen, np.int64)
    n_used = 0
    seed_used = False
    for k in range(n_chosen):
        i = chosen[k]
        used[k] = abs(rho[i] - theta[3] - _dist3(pos, i, theta[0], theta[1], theta[2])) <= tol_m
        if used[k]:
            fit_idx[n_used] = i
            n_used += 1
            seed_used = seed_used or i == 0
    if not seed_used or n_used < min_sensors:
        return nothing
    three_d = solve_3d and n_used >= min_sensors_3d
    th = np.empty(4)
    info = np.empty((4, 4))
    _gauss_newton(pos, rho, fit_idx, n_used, theta, iterations if three_d else 2, three_d,
                  huber, inv_sz2, prior_floor, converged_m, th, info)
    r_all = np.empty(n_chosen)
    for k in range(n_chosen):
        i = chosen[k]
        r_all[k] = rho[i] - th[3] - _dist3(pos, i, th[0], th[1], th[2])
    pulses = np.empty(n_chosen, np.int64)
    for k in range(n_chosen):
        pulses[k] = pool[chosen[k]]
    return STATUS_FIX, pulses, used, th, info, r_all, three_d


def _echo_shadowed_core(
    mt: np.ndarray, ms: np.ndarray, mdb: np.ndarray, pt: np.ndarray, ps: np.ndarray,
    pdb: np.ndarray, horizon_s: float, repeat_tol_s: float, level_margin_db: float,
    mlv: np.ndarray, plv: np.ndarray, repeat_level_db: float, partner: np.ndarray,
) -> np.ndarray:
    """``association.echo_shadowed`` in loops (sensor codes as float64), same rules and floats.

    Why: the numpy version builds ~20 (M, P) and (C, T) arrays per fit; the earlier sounds
    of a busy zone's fit number in the hundreds, most at other sensors, and are now passed
    unfiltered (a pulse at another sensor never pairs with a member).
    """
    m, p = len(mt), len(pt)
    out = np.zeros(m, np.bool_)
    # the timing pairs (member k trails an earlier pulse at its own sensor within the horizon)
    pair_k = np.empty(m * p, np.int64)
    pair_d = np.empty(m * p)
    t = 0
    for k in range(m):
        for j in range(p):
            if ms[k] == ps[j]:
                d = mt[k] - pt[j]
                if d > 1e-9 and d <= horizon_s:
                    # a repeat's partner is as loud (same gun, same path); unknown: no test
                    gap = abs(mlv[k] - plv[j])
                    if partner[j] != 0.0 and not gap > repeat_level_db:
                        pair_k[t] = k
                        pair_d[t] = d
                        t += 1
    need = max(3, math.ceil(m / 2))
    # a member is a repeat if one of its delays is shared (within the tolerance) by enough
    # members: it is the next round's direct sound, whatever louder sounds preceded it
    repeat = np.zeros(m, np.bool_)
    sharing = np.zeros(m, np.bool_)
    for a in range(t):
        if repeat[pair_k[a]]:
            continue
        sharing[:] = False
        for q in range(t):
            if abs(pair_d[a] - pair_d[q]) <= repeat_tol_s:
                sharing[pair_k[q]] = True
        if sharing.sum() >= need:
            repeat[pair_k[a]] = True
    for k in range(m):
        if repeat[k]:
            continue
        for j in range(p):
            if ms[k] != ps[j]:
                continue
            d = mt[k] - pt[j]
            # louder (False where either loudness is NaN, as in numpy)
            if d > 1e-9 and d <= horizon_s and pdb[j] >= mdb[k] - level_margin_db:
                out[k] = True
                break
    return out


def _heard_share_core(
    source: np.ndarray, used: np.ndarray, known: np.ndarray, hearing_range_m: float
) -> float:
    """``association.heard_share`` in loops: the same horizontal distances (C ``hypot`` of the
    same differences), median and counts. Why: a dozen small numpy calls per fit."""
    k = used.shape[0]
    du = np.empty(k)
    for i in range(k):
        du[i] = math.hypot(used[i, 0] - source[0], used[i, 1] - source[1])
    du.sort()
    radius = max(du[k // 2], hearing_range_m) + 1e-6
    heard = 0
    for i in range(k):
        if du[i] <= radius:
            heard += 1
    near = 0
    for i in range(known.shape[0]):
        if math.hypot(known[i, 0] - source[0], known[i, 1] - source[1]) <= radius:
            near += 1
    return heard / max(near, 1)


#: The compiled ``_associate_core`` (None without numba).
CORE: Callable[..., CoreResult] | None = None
#: The compiled ``_echo_shadowed_core`` (None without numba).
ECHO: Callable[..., np.ndarray] | None = None
#: The compiled ``_heard_share_core`` (None without numba).
HEARD: Callable[..., float] | None = None
if njit is not None:
    # error_model="numpy": degenerate data gives inf/NaN as in the numpy path, never an exception
    _jit = njit(cache=True, error_model="numpy")
    _dist3 = _jit(_dist3)
    _consensus = _jit(_consensus)
    _chol_solve4 = _jit(_chol_solve4)
    _gauss_newton = _jit(_gauss_newton)
    _select = _jit(_select)
    _refine = _jit(_refine)
    _seed_survives_guard = _jit(_seed_survives_guard)
    _insertion_sort = _jit(_insertion_sort)
    _group_ids = _jit(_group_ids)
    CORE = njit(cache=True, nogil=True, error_model="numpy")(_associate_core)
    ECHO = _jit(_echo_shadowed_core)
    HEARD = _jit(_heard_share_core)
