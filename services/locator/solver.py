"""Source position and emission time from arrival times: consensus, then robust least squares.

Pure numpy, vectorised over *batches* of problems so that the per-call Python overhead is paid
once per batch (``locate_batch``). ``locate`` solves one problem with the same model and the
same decisions; numpy's fixed per-call cost (~1-2 µs whatever the size) would dominate a single
problem, so when numba is installed it runs compiled kernels (``solver_jit``): a fast path for
clean problems and, for those with inconsistent arrivals, the batch path's robust steps below.
Without numba it falls back to single-problem numpy (fast path) and ``locate_batch`` (robust).

Model (range units, metres): a pulse heard by sensor ``s_j`` at time ``t_j`` satisfies
``c·t_j = c·T + |p - s_j|`` for a source at ``p`` emitting at ``T``. Unknowns θ = (x, y, z, τ=c·T).

Conditioning: callers pass positions in a local tangent plane (``shared.geo.LocalFrame``) and
times relative to a nearby instant; internally everything is re-centred on the first-arrival
sensor and its arrival time, so the normal equations see metres and milliseconds, never
kilometres and epoch seconds.

Steps of :func:`locate_batch`:

1. **Consensus** (RANSAC-style, exhaustive over small subsets): every triple of arrivals gives
   up to two exact (x, y, T) solutions at the height of the first-arrival sensor (closed form:
   two linear TDOA equations + one quadratic). Each hypothesis is scored by the truncated
   squared residual of *all* arrivals (MSAC); the best one fixes the consistent subset.
2. **Weighted least squares**: Gauss-Newton with Huber weights on the consistent subset, in 3-D
   with a soft prior on the source height (the first-arrival sensor's height, σ =
   ``z_prior_sigma_m``) — so it degrades to a fixed-height 2-D solve when the array's vertical
   spread cannot resolve height — then the consistent subset is re-selected and refined once.
3. **Uncertainty**: covariance = s²·(JᵀWJ + prior)⁻¹ with s² the residual variance (floored);
   its horizontal block gives the 95 % ellipse (χ²₂ = 5.991) and a 95 % radius (major axis,
   scaled and floored in quadrature; calibrated on real data by ``bench/pittsburgh.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from services.locator.config import LocatorConfig
from services.locator.solver_jit import KERNEL, ROBUST_DEFER, ROBUST_FIX, ROBUST_KERNEL

#: χ² quantile with 2 degrees of freedom at 95 %.
CHI2_2_95 = 5.991464547107979
#: Largest number of arrivals (earliest first) that seed consensus triples; all arrivals vote.
MAX_CONSENSUS_ARRIVALS = 14
#: Problems per vectorised chunk (bounds peak memory of the consensus step).
_CHUNK = 256
#: Smallest residual variance (m²) that weights the height prior.
_PRIOR_FLOOR_M2 = 1e-6


@dataclass(frozen=True)
class Fix:
    """A located source.

    ``position`` is in the caller's local frame (metres, east/north/up); ``emission_time_s`` is
    in the caller's time reference. ``used``/``residuals_s`` are aligned with the input arrivals;
    a residual is observed minus predicted arrival (positive = late, e.g. diffracted).
    """

    position: NDArray[np.float64]
    emission_time_s: float
    used: NDArray[np.bool_]
    residuals_s: NDArray[np.float64]
    rms_s: float
    radius95_m: float
    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float
    covariance_m2: NDArray[np.float64]  # horizontal 2x2 (east, north)

    @property
    def used_count(self) -> int:
        return int(self.used.sum())


@lru_cache(maxsize=64)
def _triples(n: int) -> NDArray[np.intp]:
    """All index triples of range(n), shape (K, 3)."""
    return np.array(list(itertools.combinations(range(n), 3)), dtype=np.intp).reshape(-1, 3)


def triple_hypotheses(
    a: NDArray, z: NDArray, rho: NDArray, tri: NDArray, z0: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """Exact sources through three arrivals each, at fixed source height ``z0``.

    Args: ``a`` (B, N, 2) horizontal sensor positions, ``z`` (B, N) heights, ``rho`` (B, N)
    arrival times × c (m), ``tri`` (K, 3) or (B, K, 3) indices, ``z0`` (B,) source height.
    Returns ``p`` (B, 2K, 2) positions, ``tau`` (B, 2K) emission times × c, ``ok`` (B, 2K):
    two roots per triple, ``ok`` False where a root is complex, non-causal or degenerate.
    """
    if tri.ndim == 2:
        tri = np.broadcast_to(tri, (a.shape[0], *tri.shape))
    take = np.take_along_axis
    i0, i1, i2 = tri[..., 0], tri[..., 1], tri[..., 2]
    a0 = take(a, i0[..., None], axis=1)
    a1 = take(a, i1[..., None], axis=1) - a0
    a2 = take(a, i2[..., None], axis=1) - a0
    r0 = take(rho, i0, axis=1)
    r1 = take(rho, i1, axis=1) - r0
    r2 = take(rho, i2, axis=1) - r0
    zz = z0[:, None]
    k0 = (zz - take(z, i0, axis=1)) ** 2
    k1 = (zz - take(z, i1, axis=1)) ** 2
    k2 = (zz - take(z, i2, axis=1)) ** 2
    b1 = 0.5 * ((a1**2).sum(-1) + k1 - k0 - r1**2)
    b2 = 0.5 * ((a2**2).sum(-1) + k2 - k0 - r2**2)
    det = a1[..., 0] * a2[..., 1] - a1[..., 1] * a2[..., 0]
    scale = (a1**2).sum(-1) + (a2**2).sum(-1)
    good = np.abs(det) > 1e-3 * scale
    inv = np.where(good, 1.0 / np.where(good, det, 1.0), 0.0)
    # q = u + v·σ solves the two differenced (linear) equations; σ = τ - ρ0 <= 0
    ux = (a2[..., 1] * b1 - a1[..., 1] * b2) * inv
    uy = (-a2[..., 0] * b1 + a1[..., 0] * b2) * inv
    vx = (a2[..., 1] * r1 - a1[..., 1] * r2) * inv
    vy = (-a2[..., 0] * r1 + a1[..., 0] * r2) * inv
    qa = vx * vx + vy * vy - 1.0
    qb = 2.0 * (ux * vx + uy * vy)
    qc = ux * ux + uy * uy + k0
    disc = qb * qb - 4.0 * qa * qc
    good &= disc >= 0
    sq = np.sqrt(np.maximum(disc, 0.0))
    lin = np.abs(qa) < 1e-9
    safe_qa = np.where(lin, 1.0, qa)
    s_lin = np.where(np.abs(qb) > 1e-12, -qc / np.where(np.abs(qb) > 1e-12, qb, 1.0), 1.0)
    s1 = np.where(lin, s_lin, (-qb + sq) / (2 * safe_qa))
    s2 = np.where(lin, s_lin, (-qb - sq) / (2 * safe_qa))
    sig = np.concatenate([s1, s2], axis=1)
    ok = np.concatenate([good, good & ~lin], axis=1) & (sig <= 1e-6)
    u = np.concatenate([np.stack([ux, uy], -1)] * 2, axis=1)
    v = np.concatenate([np.stack([vx, vy], -1)] * 2, axis=1)
    a0r = np.concatenate([a0, a0], axis=1)
    p = a0r + u + v * sig[..., None]
    tau = np.concatenate([r0, r0], axis=1) + sig
    return p, tau, ok


def triple_hypotheses_one(
    pos: NDArray, rho: NDArray, tri: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """:func:`triple_hypotheses` for one problem with the source at height 0.

    ``pos`` (N, 3), ``rho`` (N,), ``tri`` (K, 3). Returns ``p`` (2K, 2), ``tau`` (2K,),
    ``ok`` (2K,), the same roots in the same order (plain indexing instead of the batched
    gathers: this runs once per decided pulse in the engine).
    """
    i0, i1, i2 = tri[:, 0], tri[:, 1], tri[:, 2]
    a0 = pos[i0, :2]
    a1 = pos[i1, :2] - a0
    a2 = pos[i2, :2] - a0
    r0 = rho[i0]
    r1 = rho[i1] - r0
    r2 = rho[i2] - r0
    zz = pos[:, 2] ** 2
    k0 = zz[i0]
    n1 = (a1 * a1).sum(-1)
    n2 = (a2 * a2).sum(-1)
    b1 = 0.5 * (n1 + zz[i1] - k0 - r1 * r1)
    b2 = 0.5 * (n2 + zz[i2] - k0 - r2 * r2)
    a1x, a1y, a2x, a2y = a1[:, 0], a1[:, 1], a2[:, 0], a2[:, 1]
    det = a1x * a2y - a1y * a2x
    good = np.abs(det) > 1e-3 * (n1 + n2)
    inv = np.where(good, 1.0 / np.where(good, det, 1.0), 0.0)
    ux = (a2y * b1 - a1y * b2) * inv
    uy = (-a2x * b1 + a1x * b2) * inv
    vx = (a2y * r1 - a1y * r2) * inv
    vy = (-a2x * r1 + a1x * r2) * inv
    qa = vx * vx + vy * vy - 1.0
    qb = 2.0 * (ux * vx + uy * vy)
    qc = ux * ux + uy * uy + k0
    disc = qb * qb - 4.0 * qa * qc
    good &= disc >= 0
    sq = np.sqrt(np.maximum(disc, 0.0))
    lin = np.abs(qa) < 1e-9
    safe_qa = np.where(lin, 1.0, qa)
    lin_ok = np.abs(qb) > 1e-12
    s_lin = np.where(lin_ok, -qc / np.where(lin_ok, qb, 1.0), 1.0)
    s1 = np.where(lin, s_lin, (-qb + sq) / (2 * safe_qa))
    s2 = np.where(lin, s_lin, (-qb - sq) / (2 * safe_qa))
    sig = np.concatenate([s1, s2])
    ok = np.concatenate([good, good & ~lin]) & (sig <= 1e-6)
    px = np.concatenate([a0[:, 0] + ux, a0[:, 0] + ux]) + np.concatenate([vx, vx]) * sig
    py = np.concatenate([a0[:, 1] + uy, a0[:, 1] + uy]) + np.concatenate([vy, vy]) * sig
    tau = np.concatenate([r0, r0]) + sig
    return np.stack([px, py], -1), tau, ok


def hypothesis_residuals(
    p: NDArray, tau: NDArray, z0: NDArray, pos: NDArray, rho: NDArray
) -> NDArray:
    """Observed minus predicted range (m) of every arrival under every hypothesis: (B, H, N)."""
    dx = p[:, :, None, 0] - pos[:, None, :, 0]
    dy = p[:, :, None, 1] - pos[:, None, :, 1]
    dz = z0[:, None, None] - pos[:, None, :, 2]
    return rho[:, None, :] - tau[:, :, None] - np.sqrt(dx * dx + dy * dy + dz * dz)


def gauss_newton(
    pos: NDArray,
    rho: NDArray,
    w: NDArray,
    theta: NDArray,
    z0: NDArray,
    config: LocatorConfig,
    iterations: int,
) -> tuple[NDArray, NDArray, NDArray]:
    """Robust (Huber) weighted Gauss-Newton, batched.

    ``pos`` (B, N, 3), ``rho`` (B, N) m, ``w`` (B, N) weights (0 = unused), ``theta`` (B, 4) =
    (x, y, z, τ) start, ``z0`` (B,) height prior. Returns (theta, residuals (B, N) observed -
    predicted in m, information matrix (B, 4, 4) at the solution, unscaled).
    """
    huber = config.huber_m
    zflag = 1.0 if config.solve_3d else 0.0
    pin = np.zeros((4, 4))
    pin[2, 2] = 1.0 - zflag  # 2-D: z pinned at the prior
    theta = theta.copy()
    theta[:, 2] = np.where(zflag > 0, theta[:, 2], z0)
    wsum = np.maximum(w.sum(-1), 1.0)
    for it in range(iterations + 1):
        d = pos - theta[:, None, :3]  # sensor - source
        dist = np.sqrt((d * d).sum(-1))
        dist = np.maximum(dist, 1e-6)
        r = rho - theta[:, 3:4] - dist  # observed - predicted
        absr = np.abs(r)
        # height prior weighted like one more observation: (residual scale / σ_z)², so it
        # only matters when the residuals cannot resolve height (noiseless data: no bias)
        s2 = np.maximum((w * r * r).sum(-1) / wsum, _PRIOR_FLOOR_M2)
        lam = s2 / config.z_prior_sigma_m**2 * zflag
        ww = w * np.where(absr <= huber, 1.0, huber / np.maximum(absr, 1e-12))
        # model f = dist + τ - ρ = -r; ∂f/∂p = (p - s)/dist = -d/dist; ∂f/∂τ = 1
        jac = np.empty((*r.shape, 4))
        jac[..., :3] = -d / dist[..., None]
        jac[..., 2] *= zflag
        jac[..., 3] = 1.0
        jw = jac * ww[..., None]
        info = np.matmul(jw.transpose(0, 2, 1), jac) + pin
        info[:, 2, 2] += lam
        if it == iterations:
            return theta, r, info
        grad = -(jw * r[..., None]).sum(1)
        grad[:, 2] += lam * (theta[:, 2] - z0)
        info = info + 1e-12 * np.eye(4)
        step = np.linalg.solve(info, -grad[..., None])[..., 0]
        theta = theta + step
    raise AssertionError("unreachable")


def gauss_newton_one(
    pos: NDArray, rho: NDArray, theta: NDArray, config: LocatorConfig, iterations: int,
    solve_3d: bool,
) -> tuple[NDArray, NDArray, NDArray]:
    """:func:`gauss_newton` for one problem, unit weights, height prior at z = 0.

    Same model and answers (to the early exit: it stops once a step moves the source less
    than ``_CONVERGED_M``; the returned residuals and information are then evaluated at the
    final θ, as in the batched path), written with as few numpy calls as possible: one
    (n, 5) matrix holds the Jacobian and the residuals, so one product gives the information
    matrix, the gradient and the residual sum of squares; the 4x4 solves are plain floats.
    ``pos`` (n, 3), ``rho`` (n,), ``theta`` (4,) start. Returns (theta (4,), residuals (n,),
    information (4, 4)). Never raises; a singular system returns the current iterate.
    """
    n = rho.shape[0]
    huber = config.huber_m
    inv_sz2 = 1.0 / config.z_prior_sigma_m**2
    th = np.array(theta, float)
    if not solve_3d:
        th[2] = 0.0
    jac = np.empty((n, 5))
    r = jac[:, 4]
    converged = False
    for it in range(iterations + 1):
        d = th[:3] - pos  # source - sensor
        dist = np.sqrt((d * d) @ _ONES3)
        np.maximum(dist, 1e-6, out=dist)
        np.divide(d, dist[:, None], out=jac[:, :3])
        if not solve_3d:
            jac[:, 2] = 0.0
        jac[:, 3] = 1.0
        np.subtract(rho, dist, out=r)
        r -= th[3]  # observed - predicted
        rmax = max(float(r.max()), -float(r.min())) if n else 0.0
        if rmax > huber:
            wts = np.minimum(1.0, huber / np.maximum(np.abs(r), 1e-12))
            m = ((jac * wts[:, None]).T @ jac).tolist()
            rr = float(r @ r)
        else:
            m = (jac.T @ jac).tolist()
            rr = m[4][4]
        lam = max(rr / max(n, 1), _PRIOR_FLOOR_M2) * inv_sz2 if solve_3d else 0.0
        m[2][2] += lam if solve_3d else 1.0
        if it == iterations or converged:
            break
        g = m[4][:4]  # Jᵀ W r  (∂f/∂θ = jac[:, :4] for f = -r)
        g[2] -= lam * th[2]
        for i in range(4):
            m[i][i] += 1e-12
        step = _solve4(m, g)
        if step is None:
            break
        th += step
        converged = step[0] ** 2 + step[1] ** 2 + step[2] ** 2 < _CONVERGED_M**2
    info = np.array([row[:4] for row in m[:4]])
    return th, r.copy(), info


def ellipse95(cov: NDArray, config: LocatorConfig) -> tuple[float, float, float, float]:
    """(radius95, semi_major, semi_minor, orientation° clockwise from north) of a 2x2 cov."""
    a, b, d = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    tr, det = a + d, a * d - b * b
    root = math.sqrt(max(tr * tr / 4 - det, 0.0))
    l1, l2 = max(tr / 2 + root, 0.0), max(tr / 2 - root, 0.0)
    # major-axis direction (east, north) -> bearing clockwise from north
    ex, ey = (b, l1 - a) if abs(b) > 1e-15 else ((1.0, 0.0) if a >= d else (0.0, 1.0))
    orientation = math.degrees(math.atan2(ex, ey)) % 180.0
    k, floor2 = config.radius95_scale, config.radius95_floor_m**2
    major = math.sqrt((k * math.sqrt(CHI2_2_95 * l1)) ** 2 + floor2)
    minor = math.sqrt((k * math.sqrt(CHI2_2_95 * l2)) ** 2 + floor2)
    return major, major, minor, orientation


def finish(
    pos: NDArray,
    rho: NDArray,
    used: NDArray,
    theta: NDArray,
    r: NDArray,
    info: NDArray,
    c: float,
    t_ref: float,
    offset: NDArray,
    config: LocatorConfig,
) -> Fix:
    """Build a :class:`Fix` for one problem from the final Gauss-Newton state."""
    n = int(used.sum())
    ru = r[used]
    dof = max(n - (4 if config.solve_3d else 3), 1)
    s2 = max(float((ru * ru).sum()) / dof, config.range_sigma_floor_m**2)
    try:
        cov = np.linalg.inv(info)[:2, :2] * s2
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.inf)
    if not np.all(np.isfinite(cov)):
        cov = np.eye(2) * 1e6
    radius, major, minor, orient = ellipse95(cov, config)
    return Fix(
        position=theta[:3] + offset,
        emission_time_s=t_ref + float(theta[3]) / c,
        used=used.copy(),
        residuals_s=r / c,
        rms_s=float(math.sqrt((ru * ru).mean()) / c) if n else 0.0,
        radius95_m=radius,
        semi_major_m=major,
        semi_minor_m=minor,
        orientation_deg=orient,
        covariance_m2=cov,
    )


def refine(
    pos: NDArray,
    rho: NDArray,
    valid: NDArray,
    theta0: NDArray,
    z0: NDArray,
    config: LocatorConfig,
    tol_m: NDArray,
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Robust WLS on all valid arrivals, then (select consistent -> refit) until stable.

    At most three passes; stops as soon as no problem's consistent set changes, so clean
    batches pay for one pass. Returns (theta, residuals m, info, used mask); ``tol_m`` (B,) is
    the consistency gate.
    """
    used = valid
    theta, r, info = gauss_newton(
        pos, rho, used.astype(float), theta0, z0, config, config.gauss_newton_iterations
    )
    for _ in range(2):
        new = valid & (np.abs(r) <= tol_m[:, None])
        if np.array_equal(new, used):
            break
        used = new
        theta, r, info = gauss_newton(
            pos, rho, used.astype(float), theta, z0, config, config.gauss_newton_iterations
        )
    return theta, r, info, used


def _consensus(
    pos: NDArray, rho: NDArray, valid: NDArray, z0: NDArray, tol_m: NDArray
) -> tuple[NDArray, NDArray]:
    """Best exact-triple hypothesis per problem by MSAC cost. Returns theta (B, 4), found (B,)."""
    b, n = rho.shape
    m = min(n, MAX_CONSENSUS_ARRIVALS)
    # triples drawn from the m earliest valid arrivals of each problem
    order = np.argsort(np.where(valid, rho, np.inf), axis=1, kind="stable")[:, :m]
    tri = order[:, _triples(m)]  # (B, K, 3)
    p, tau, ok = triple_hypotheses(pos[..., :2], pos[..., 2], rho, tri, z0)
    tri_ok = valid[np.arange(b)[:, None, None], tri].all(-1)
    ok &= np.concatenate([tri_ok, tri_ok], axis=1)
    res = hypothesis_residuals(p, tau, z0, pos, rho)
    t2 = (tol_m**2)[:, None, None]
    cost = np.where(valid[:, None, :], np.minimum(res * res, t2), 0.0).sum(-1)
    cost = np.where(ok, cost, np.inf)
    best = np.argmin(cost, axis=1)
    rows = np.arange(b)
    theta = np.empty((b, 4))
    theta[:, :2] = p[rows, best]
    theta[:, 2] = z0
    theta[:, 3] = tau[rows, best]
    return theta, np.isfinite(cost[rows, best])


def locate_batch(
    positions: NDArray,
    times: NDArray,
    valid: NDArray,
    c: NDArray | float,
    config: LocatorConfig,
) -> list[Fix | None]:
    """Locate many independent problems at once (one arrival per sensor each).

    ``positions`` (B, N, 3) local metres, ``times`` (B, N) seconds (any reference; keep it near
    the arrivals), ``valid`` (B, N) mask for padding, ``c`` speed of sound (scalar or (B,)).
    Returns one :class:`Fix` per problem, or None where fewer than ``config.min_sensors``
    arrivals are mutually consistent. Never raises on degenerate geometry.
    """
    positions = np.asarray(positions, float)
    times = np.asarray(times, float)
    valid = np.asarray(valid, bool)
    bsz = positions.shape[0]
    cs = np.broadcast_to(np.asarray(c, float), (bsz,)).copy()
    out: list[Fix | None] = []
    for lo in range(0, bsz, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, bsz))
        out.extend(_locate_chunk(positions[sl], times[sl], valid[sl], cs[sl], config))
    return out


def linear_init(pos: NDArray, rho: NDArray, valid: NDArray, z0: NDArray) -> NDArray:
    """Closed-form start (x, y, z0, τ) from all valid arrivals, batched.

    Squaring ``|p - s_i|² = (ρ_i - τ)²`` makes every arrival one *linear* equation in
    (x, y, τ, w = |p|² - τ²) at fixed height z0; weighted least squares over the valid arrivals
    (the constraint on w is ignored: this is only a start for Gauss-Newton).
    """
    k = (z0[:, None] - pos[..., 2]) ** 2
    a = np.stack(
        [-2 * pos[..., 0], -2 * pos[..., 1], 2 * rho, np.ones_like(rho)], axis=-1
    ) * valid[..., None]
    y = (rho**2 - pos[..., 0] ** 2 - pos[..., 1] ** 2 - k) * valid
    ata = np.matmul(a.transpose(0, 2, 1), a) + 1e-9 * np.eye(4)
    aty = (a * y[..., None]).sum(1)
    sol = np.linalg.solve(ata, aty[..., None])[..., 0]
    theta = np.stack([sol[:, 0], sol[:, 1], z0, sol[:, 2]], axis=-1)
    return np.where(np.isfinite(theta), theta, 0.0)


def _ellipse_batch(cov: NDArray, config: LocatorConfig) -> tuple[NDArray, ...]:
    """Vectorised :func:`ellipse95` over (B, 2, 2)."""
    a, b, d = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    tr, det = a + d, a * d - b * b
    root = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    l1, l2 = np.maximum(tr / 2 + root, 0.0), np.maximum(tr / 2 - root, 0.0)
    tilted = np.abs(b) > 1e-15
    ex = np.where(tilted, b, np.where(a >= d, 1.0, 0.0))
    ey = np.where(tilted, l1 - a, np.where(a >= d, 0.0, 1.0))
    orientation = np.degrees(np.arctan2(ex, ey)) % 180.0
    k, floor2 = config.radius95_scale, config.radius95_floor_m**2
    major = np.sqrt(k * k * CHI2_2_95 * l1 + floor2)
    minor = np.sqrt(k * k * CHI2_2_95 * l2 + floor2)
    return major, minor, orientation


def _locate_chunk(
    positions: NDArray, times: NDArray, valid: NDArray, c: NDArray, config: LocatorConfig
) -> list[Fix | None]:
    b = positions.shape[0]
    rows = np.arange(b)
    # re-centre on the first arrival: its sensor position and its time
    first = np.argmin(np.where(valid, times, np.inf), axis=1)
    offset = positions[rows, first].copy()
    t_ref = times[rows, first].copy()
    pos = positions - offset[:, None, :]
    rho = np.where(valid, (times - t_ref[:, None]) * c[:, None], 0.0)
    z0 = np.zeros(b)
    tol_m = config.association_tolerance_s * c
    # fast path: closed-form start from all arrivals, robust refinement
    theta, r, info, used = refine(pos, rho, valid, linear_init(pos, rho, valid, z0), z0, config,
                                  tol_m)
    # consensus only where some arrival was found inconsistent (or the fast path failed)
    # (a clear majority found consistent by the robust fit needs no consensus search)
    n_valid = valid.sum(1)
    bad = (used.sum(1) < np.maximum(config.min_sensors, np.ceil(0.75 * n_valid))) | ~np.all(
        np.isfinite(theta), axis=1
    )
    if bad.any():
        idx = np.flatnonzero(bad)
        th_c, found = _consensus(pos[idx], rho[idx], valid[idx], z0[idx], tol_m[idx])
        th_c, r_c, info_c, used_c = refine(
            pos[idx], rho[idx], valid[idx], th_c, z0[idx], config, tol_m[idx]
        )
        better = found & (used_c.sum(1) > used[idx].sum(1)) | ~np.all(
            np.isfinite(theta[idx]), axis=1
        )
        sel = idx[better]
        theta[sel], r[sel], info[sel], used[sel] = (
            th_c[better], r_c[better], info_c[better], used_c[better]
        )
    n_used = used.sum(1)
    ru2 = np.where(used, r * r, 0.0).sum(1)
    dof = np.maximum(n_used - (4 if config.solve_3d else 3), 1)
    s2 = np.maximum(ru2 / dof, config.range_sigma_floor_m**2)
    ok = (n_used >= config.min_sensors) & np.all(np.isfinite(theta), axis=1)
    safe_info = np.where(ok[:, None, None], info, np.eye(4))
    cov = np.linalg.inv(safe_info)[:, :2, :2] * s2[:, None, None]
    major, minor, orient = _ellipse_batch(cov, config)
    position = theta[:, :3] + offset
    emission = t_ref + theta[:, 3] / c
    rms = np.sqrt(ru2 / np.maximum(n_used, 1)) / c
    residuals = r / c[:, None]
    fixes: list[Fix | None] = []
    for i, good, pos_i, em, u, res, rm, ma, mi, orr, cv in zip(
        range(b), ok.tolist(), position, emission.tolist(), used, residuals, rms.tolist(),
        major.tolist(), minor.tolist(), orient.tolist(), cov, strict=True,
    ):
        if not good:
            fixes.append(None)
            continue
        v = valid[i]
        fixes.append(
            Fix(pos_i, em, u[v], res[v], rm, ma, ma, mi, orr, cv)
        )
    return fixes


def _solve4(m: list[list[float]], b: list[float]) -> list[float] | None:
    """Solve the symmetric positive definite 4x4 system ``m x = b`` (Cholesky, plain floats).

    Returns None if ``m`` is not numerically positive definite. Plain Python: for a 4x4
    system this is several times faster than a numpy call's fixed overhead.
    """
    a00, a01, a02, a03 = m[0][:4]
    a11, a12, a13 = m[1][1], m[1][2], m[1][3]
    a22, a23, a33 = m[2][2], m[2][3], m[3][3]
    if a00 <= 0.0:
        return None
    l00 = math.sqrt(a00)
    l10, l20, l30 = a01 / l00, a02 / l00, a03 / l00
    d1 = a11 - l10 * l10
    if d1 <= 0.0:
        return None
    l11 = math.sqrt(d1)
    l21, l31 = (a12 - l20 * l10) / l11, (a13 - l30 * l10) / l11
    d2 = a22 - l20 * l20 - l21 * l21
    if d2 <= 0.0:
        return None
    l22 = math.sqrt(d2)
    l32 = (a23 - l30 * l20 - l31 * l21) / l22
    d3 = a33 - l30 * l30 - l31 * l31 - l32 * l32
    if d3 <= 0.0:
        return None
    l33 = math.sqrt(d3)
    y0 = b[0] / l00
    y1 = (b[1] - l10 * y0) / l11
    y2 = (b[2] - l20 * y0 - l21 * y1) / l22
    y3 = (b[3] - l30 * y0 - l31 * y1 - l32 * y2) / l33
    x3 = y3 / l33
    x2 = (y2 - l32 * x3) / l22
    x1 = (y1 - l21 * x2 - l31 * x3) / l11
    x0 = (y0 - l10 * x1 - l20 * x2 - l30 * x3) / l00
    return [x0, x1, x2, x3]


#: Fast path: Gauss-Newton has converged once a step moves the source less than this (m).
_CONVERGED_M = 1e-3
_ONES3 = np.ones(3)


def _fix_all_used(
    theta: NDArray, offset: NDArray, t_ref: float, r: NDArray, rr: float,
    info: list[list[float]], c: float, config: LocatorConfig,
) -> Fix | None:
    """The fast paths' :class:`Fix` (every arrival used) from the final Gauss-Newton state:
    θ relative to ``offset``/``t_ref``, residuals ``r`` (m), Σr², the information matrix
    (rows of at least 4 floats). None if the information matrix is not positive definite."""
    n = r.shape[0]
    dof = max(n - (4 if config.solve_3d else 3), 1)
    s2 = max(rr / dof, config.range_sigma_floor_m**2)
    # horizontal covariance: first two columns of info⁻¹ (two solves), times s²
    c0 = _solve4(info, [1.0, 0.0, 0.0, 0.0])
    c1 = _solve4(info, [0.0, 1.0, 0.0, 0.0])
    if c0 is None or c1 is None:
        return None
    cxy = c0[1] * s2
    cov = np.array([[c0[0] * s2, cxy], [cxy, c1[1] * s2]])
    radius, major, minor, orient = ellipse95(cov, config)
    return Fix(
        position=theta[:3] + offset,
        emission_time_s=t_ref + float(theta[3]) / c,
        used=np.ones(n, bool),
        residuals_s=r / c,
        rms_s=math.sqrt(rr / n) / c,
        radius95_m=radius,
        semi_major_m=major,
        semi_minor_m=minor,
        orientation_deg=orient,
        covariance_m2=cov,
    )


def _locate_fast(
    positions: NDArray, times: NDArray, c: float, config: LocatorConfig
) -> Fix | None:
    """One clean problem without the consensus search, or None to take the robust path.

    The same model as :func:`locate_batch` — closed-form start, Huber Gauss-Newton with the
    height prior — written for a single problem with as few numpy calls as possible (each
    costs about a microsecond, whatever the size): one (n, 5) matrix holds the Jacobian and
    the residuals, so one product gives the information matrix, the gradient and the residual
    sum of squares; the 4x4 solves are plain floats. Stops once a step is below
    ``_CONVERGED_M`` (1 mm; residuals and information are then those of the last iterate, at most
    1 mm away). Succeeds only if *every* arrival ends within the consistency gate (the batch
    path would then also use them all and skip consensus); otherwise returns None.
    """
    if KERNEL is not None:
        return _locate_fast_jit(positions, times, c, config)
    n = times.shape[0]
    first = int(times.argmin())
    offset = positions[first]
    t_ref = float(times[first])
    pos = positions - offset
    rho = (times - t_ref) * c
    # closed-form start at the first sensor's height (see linear_init)
    a = np.empty((n, 5))
    np.multiply(pos[:, :2], -2.0, out=a[:, :2])
    np.multiply(rho, 2.0, out=a[:, 2])
    a[:, 3] = 1.0
    a[:, 4] = rho * rho - (pos * pos) @ _ONES3
    m = (a.T @ a).tolist()
    for i in range(4):
        m[i][i] += 1e-9
    sol = _solve4(m, m[4][:4])
    if sol is None or not all(map(math.isfinite, sol)):
        return None
    th = np.array([sol[0], sol[1], 0.0, sol[2]])
    huber, zflag = config.huber_m, config.solve_3d
    inv_sz2 = 1.0 / config.z_prior_sigma_m**2
    jac = a  # reused: columns (p - s)/|p - s| (3), 1, residual
    r = jac[:, 4]
    for it in range(config.gauss_newton_iterations + 1):
        d = th[:3] - pos  # source - sensor
        dist = np.sqrt((d * d) @ _ONES3)
        np.maximum(dist, 1e-6, out=dist)
        np.divide(d, dist[:, None], out=jac[:, :3])
        if not zflag:
            jac[:, 2] = 0.0
        np.subtract(rho, dist, out=r)
        r -= th[3]  # observed - predicted
        rmax = max(float(r.max()), -float(r.min()))
        if rmax > huber:
            jw = jac * np.minimum(1.0, huber / np.maximum(np.abs(r), 1e-12))[:, None]
            m = (jw.T @ jac).tolist()
            rr = float(r @ r)
        else:
            m = (jac.T @ jac).tolist()
            rr = m[4][4]
        lam = max(rr / n, _PRIOR_FLOOR_M2) * inv_sz2 if zflag else 0.0
        m[2][2] += lam if zflag else 1.0
        if it == config.gauss_newton_iterations:
            break
        # model f = dist + τ - ρ = -r, ∂f/∂θ = jac[:, :4]: step solves info·δ = Jᵀ W r - prior
        g = m[4][:4]
        g[2] -= lam * th[2]
        for i in range(4):
            m[i][i] += 1e-12
        step = _solve4(m, g)
        if step is None:
            return None
        th += step
        if step[0] ** 2 + step[1] ** 2 + step[2] ** 2 < _CONVERGED_M**2:
            break
    if rmax > config.association_tolerance_s * c or not np.all(np.isfinite(th)):
        return None
    return _fix_all_used(th, offset, t_ref, r, rr, m, c, config)


def _locate_fast_jit(
    positions: NDArray, times: NDArray, c: float, config: LocatorConfig
) -> Fix | None:
    """:func:`_locate_fast` through the compiled kernel (``solver_jit``): same contract."""
    n = times.shape[0]
    theta = np.empty(4)
    r = np.empty(n)
    info = np.empty((4, 4))
    zflag = config.solve_3d
    assert KERNEL is not None
    first, t_ref, rr, rmax = KERNEL(
        positions, times, c, config.huber_m, zflag, 1.0 / config.z_prior_sigma_m**2,
        config.gauss_newton_iterations, _PRIOR_FLOOR_M2, _CONVERGED_M, theta, r, info,
    )
    if first < 0 or rmax > config.association_tolerance_s * c:
        return None
    if not (math.isfinite(theta[0]) and math.isfinite(theta[1]) and math.isfinite(theta[3])):
        return None
    return _fix_all_used(theta, positions[first], t_ref, r, rr, info.tolist(), c, config)


def locate(
    positions: NDArray, times: NDArray, c: float, config: LocatorConfig
) -> Fix | None:
    """Locate one source from arrivals at distinct sensors (outliers allowed).

    ``positions`` (n, 3) local metres, ``times`` (n,) seconds. See :func:`locate_batch`; same
    answers (to well under a millimetre). Clean problems (every arrival consistent with the
    robust fit) take a fast single-problem path; the rest take the batch path's refinement and
    consensus search — compiled for one problem when numba is installed, else
    :func:`locate_batch` with a batch of one (~20 µs against ~600 µs).
    """
    positions = np.asarray(positions, float)
    times = np.asarray(times, float)
    if positions.shape[0] < max(config.min_sensors, 3):
        return None
    fix = _locate_fast(positions, times, float(c), config)
    if fix is not None:
        return fix
    if ROBUST_KERNEL is not None:
        return _locate_robust_jit(positions, times, float(c), config)
    return _locate_one_batched(positions, times, c, config)


def _locate_one_batched(
    positions: NDArray, times: NDArray, c: float, config: LocatorConfig
) -> Fix | None:
    """:func:`locate_batch` with a batch of one (the robust path without numba)."""
    return locate_batch(
        positions[None], times[None], np.ones((1, len(times)), bool), c, config
    )[0]


def _locate_robust_jit(
    positions: NDArray, times: NDArray, c: float, config: LocatorConfig
) -> Fix | None:
    """The robust path (consensus + refinement) of :func:`locate_batch` for one problem,
    through the compiled kernel (``solver_jit.ROBUST_KERNEL``).

    Same decisions as the batch path with a batch of one: ~20 µs instead of ~600 µs of numpy
    call overhead. Where the kernel cannot follow numpy (an exactly singular system, a
    non-finite input) it defers, and the batch path answers (or raises) as it always did.
    """
    assert ROBUST_KERNEL is not None
    n = times.shape[0]
    theta = np.empty(4)
    r = np.empty(n)
    info = np.empty((4, 4))
    used = np.empty(n, bool)
    cov = np.empty((2, 2))
    status, first, t_ref, n_used, ru2 = ROBUST_KERNEL(
        positions, times, c, config.association_tolerance_s * c, config.huber_m,
        config.solve_3d, config.z_prior_sigma_m**2, config.gauss_newton_iterations,
        _PRIOR_FLOOR_M2, config.min_sensors, MAX_CONSENSUS_ARRIVALS,
        config.range_sigma_floor_m**2, theta, r, info, used, cov,
    )
    if status == ROBUST_DEFER:
        return _locate_one_batched(positions, times, c, config)
    if status != ROBUST_FIX:
        return None
    radius, major, minor, orient = ellipse95(cov, config)
    return Fix(
        position=theta[:3] + positions[first],
        emission_time_s=t_ref + float(theta[3]) / c,
        used=used,
        residuals_s=r / c,
        rms_s=math.sqrt(ru2 / max(n_used, 1)) / c,
        radius95_m=radius,
        semi_major_m=major,
        semi_minor_m=minor,
        orientation_deg=orient,
        covariance_m2=cov,
    )
