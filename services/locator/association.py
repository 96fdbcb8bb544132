"""Which pulses, heard by different sensors, came from one source (pure).

The engine keeps undecided pulses sorted by arrival time and decides them earliest first. The
earliest undecided pulse is the *seed*. Every other pulse of the seed's source arrives after it
and no later than the seed plus the travel time between the two sensors: for sensors i, j and
a source at p, ``|t_j - t_i| = | |p - s_j| - |p - s_i| | / c <= |s_j - s_i| / c``. So once the
clock passes ``t_seed + max_j |s_j - s_seed| / c`` (+ margin) every pulse the seed's source
can have produced is known, and :func:`associate` decides the seed:

1. **Gate** (physics): candidates are pulses at *other* sensors with
   ``0 <= t - t_seed <= min(|s - s_seed|, max_range) / c + tolerance``. A second pulse at the
   seed's own sensor (an echo) is never a candidate.
2. **Consensus through the seed**: each pair of candidates (at the sensors nearest the
   seed's) at two more sensors, with the seed,
   gives up to two exact sources (``solver.triple_hypotheses``); every hypothesis is scored
   by the truncated squared residual of the *best* pulse of each sensor (MSAC). Echoes,
   diffracted (late) arrivals, other rounds and unrelated noise simply fail to fit.
3. **Refine**: robust least squares on one pulse per consistent sensor, re-select, refine.
4. **Guard against a bad seed**: a seed from a sensor with a wrong clock can be forced into a
   coincidental fit with a few pulses of a real shot. Re-solving from the fit's other pulses
   *without* the seed must not find a better-supported source that excludes the seed;
   if it does, the seed is rejected (the real shot is found when its own first pulse is seed).

If the seed is not part of a source seen by at least ``min_sensors`` sensors it is noise (door
slam, echo, a sensor that alone heard something) and the caller drops it. The outcome depends
only on the pulses' times and positions, never on when they reached us.

Steps 1-4 and the final fit run compiled (``association_jit``) when numba is installed: the
same steps and rules, one call per seed instead of ~150 small numpy operations. The numpy
functions below are the reference and the fallback; both give the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from services.locator.association_jit import (
    CONVERGED_M,
    CORE,
    ECHO,
    HEARD,
    PRIOR_FLOOR_M2,
    STATUS_DEFER,
    STATUS_FIX,
)
from services.locator.config import LocatorConfig
from services.locator.solver import (
    Fix,
    finish,
    gauss_newton_one,
    triple_hypotheses_one,
)

#: A sensor's closest pulse this far from a fit still counts in its health (not unrelated).
HEALTH_GATE_S = 0.25
#: Most non-seed members used to re-check a fit without its seed.
_GUARD_MEMBERS = 10
#: Consensus pairs are drawn from this many possible candidates, those at the sensors
#: nearest the seed's first (all pulses vote). Why: the hypothesis count grows with the
#: square of the candidates; a real source's pulses at the sensors nearest the seed's follow
#: it within the tightest physical gates (|Δt| <= separation / c), so in dense traffic (many
#: sources' pulses in one window) they are the least diluted by other sources' pulses, where
#: the earliest candidates would be those of whatever else was heard just after the seed.
CONSENSUS_CANDIDATES = 24


@dataclass(frozen=True)
class Association:
    """The source of a seed pulse and the pulses that belong to it.

    ``pulses`` holds, for every sensor of the window within ``HEALTH_GATE_S`` of the fit, the
    index (into the caller's arrays) of its closest pulse; ``fix.used``/``fix.residuals_s`` are
    aligned with ``pulses``. ``members`` = ``pulses[fix.used]`` (one pulse per sensor, the
    seed included); other entries are sensors judged inconsistent (e.g. a bad clock).
    """

    pulses: NDArray[np.intp]
    fix: Fix

    @property
    def members(self) -> NDArray[np.intp]:
        return self.pulses[self.fix.used]

    @property
    def rejected(self) -> NDArray[np.intp]:
        return self.pulses[~self.fix.used]


def gate(
    positions: NDArray, times: NDArray, sensors: NDArray, seed: int, c: float,
    config: LocatorConfig, extra_s: float = 0.0,
) -> NDArray[np.intp]:
    """Indices of pulses that could share a source with the seed (other sensors only).

    ``extra_s`` widens the bound (used to also look at slightly-too-late pulses, whose
    residuals feed sensor health, without letting them seed hypotheses).
    """
    dt = times - times[seed]
    sep = np.sqrt(((positions - positions[seed]) ** 2).sum(-1))
    bound = np.minimum(sep, config.max_range_m) / c + config.association_tolerance_s + extra_s
    ok = (sensors != sensors[seed]) & (dt >= -1e-9) & (dt <= bound)
    return np.flatnonzero(ok)


class _Groups:
    """Pulses grouped by sensor, computed once per window (reused by every per-sensor min)."""

    __slots__ = ("ar", "group", "order", "starts")

    def __init__(self, sensors: NDArray) -> None:
        self.order = np.lexsort((np.arange(len(sensors)), sensors))
        srt = sensors[self.order]
        change = srt[1:] != srt[:-1]
        self.starts = np.flatnonzero(np.r_[True, change])
        self.group = np.cumsum(np.r_[False, change])
        self.ar = np.arange(len(srt))


def _best_per_sensor(
    absr: NDArray, sensors: NDArray, groups: _Groups | None = None
) -> tuple[NDArray, NDArray]:
    """For (H, P) |residuals| and (P,) sensor codes: per-sensor min over pulses.

    Returns (mins (H, S), argmin pulse index (H, S)) with S the distinct sensors, in ascending
    sensor-code order; ties go to the lower pulse index (deterministic).
    """
    g = groups if groups is not None else _Groups(sensors)
    a = absr[:, g.order]
    mins = np.minimum.reduceat(a, g.starts, axis=1)
    # position of the min within each group: first index where a == group min
    idx = np.where(a == mins[:, g.group], g.ar[None, :], len(g.ar))
    first = np.minimum.reduceat(idx, g.starts, axis=1)
    return mins, g.order[first]


def _fit(
    pos: NDArray, rho: NDArray, theta: NDArray, config: LocatorConfig, iterations: int,
    solve_3d: bool = False,
) -> tuple[NDArray, NDArray, NDArray]:
    """Robust fit of one source; 2-D at the seed's height unless ``solve_3d``.

    Membership is decided in 2-D: with height free, four pulses always fit exactly, so a
    "consistent" 4-sensor set would prove nothing. Returns (theta (4,), residuals, info).
    """
    return gauss_newton_one(pos, rho, theta, config, iterations, solve_3d)


def associate(
    positions: NDArray,
    times: NDArray,
    sensors: NDArray,
    seed: int,
    c: float,
    config: LocatorConfig,
    known_sensors: NDArray | None = None,
    repeat_of_open: Callable[[NDArray, NDArray[np.intp]], bool] | None = None,
) -> Association | None:
    """Decide the seed pulse: its source and the pulses that belong to it, or None (noise).

    ``positions`` (M, 3) local metres of each pulse's sensor, ``times`` (M,) seconds (relative
    to any nearby instant), ``sensors`` (M,) integer sensor codes, ``seed`` index of the
    earliest pulse. ``known_sensors`` (K, 3) are the positions (same frame) of every sensor
    that was listening; if given, a fit that too many nearby listening sensors did not hear
    is rejected (see :func:`heard_share`) unless ``repeat_of_open(source, member indices)``
    says it repeats a round of an open incident (a later round, heard by fewer sensors: see
    docs/locator-rules.md). Pure and deterministic (if ``repeat_of_open`` is); never raises.

    The decision runs compiled (``association_jit.CORE``) when numba is installed, else in
    numpy (:func:`_decide_numpy`); both take the same steps and give the same answers.
    """
    positions = np.asarray(positions, float)
    times = np.asarray(times, float)
    sensors = np.asarray(sensors)
    decided, decision = _decide_compiled(positions, times, sensors, seed, c, config)
    if not decided:
        decision = _decide_numpy(positions, times, sensors, seed, c, config)
    if decision is None:
        return None
    pulses, used, th, info, r_all, three_d = decision
    offset = positions[seed]
    # The heard-share test needs only the source (the fix's position): run it before the
    # covariance and ellipse are built (why: about half the fits of mixed traffic are
    # rejected here).
    if known_sensors is not None and len(known_sensors):
        share = heard_share(
            th[:3] + offset, positions[pulses[used]], known_sensors, config.hearing_range_m
        )
        if share < config.min_heard_share and not (
            repeat_of_open is not None and repeat_of_open(th[:3] + offset, pulses[used])
        ):
            return None
    t_seed = float(times[seed])
    fix = finish(
        positions[pulses] - offset, (times[pulses] - t_seed) * c, used, th, r_all, info, c,
        t_seed, offset, _config_3d(config, three_d),
    )
    return Association(pulses=pulses, fix=fix)


#: A decision up to the final fit: (pulses (K,) indices into the caller's arrays, used (K,),
#: theta (4,) relative to the seed's position and time, information (4x4), residuals (K,) m,
#: whether the fit was 3-D).
_Decision = tuple[NDArray[np.intp], NDArray[np.bool_], NDArray, NDArray, NDArray, bool]


def _codes(sensors: NDArray) -> NDArray[np.int64]:
    """Sensor codes as int64 with the same equality and order (for the compiled core)."""
    if sensors.dtype.kind == "i" or (sensors.dtype.kind == "u" and sensors.dtype.itemsize < 8):
        return np.ascontiguousarray(sensors, np.int64)
    # any other comparable codes: their rank (np.unique sorts, so the order is kept)
    return np.unique(sensors, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _decide_compiled(
    positions: NDArray, times: NDArray, sensors: NDArray, seed: int, c: float,
    config: LocatorConfig,
) -> tuple[bool, _Decision | None]:
    """:func:`_decide_numpy` through ``association_jit.CORE``: (decided, decision). Not decided
    (the numpy path must) without numba, or where the kernel cannot follow numpy (a
    non-finite input, positions not (M, 3))."""
    core = CORE
    if core is None or positions.ndim != 2 or positions.shape[1:] != (3,):
        return False, None
    status, pulses, used, th, info, r_all, three_d = core(
        np.ascontiguousarray(positions), np.ascontiguousarray(times), _codes(sensors),
        int(seed), float(c), config.association_tolerance_s, config.max_range_m,
        config.min_sensors, HEALTH_GATE_S, CONSENSUS_CANDIDATES, _GUARD_MEMBERS,
        config.gauss_newton_iterations, config.huber_m, 1.0 / config.z_prior_sigma_m**2,
        PRIOR_FLOOR_M2, CONVERGED_M, config.solve_3d, config.min_sensors_3d,
    )
    if status == STATUS_DEFER:
        return False, None
    if status != STATUS_FIX:
        return True, None
    return True, (pulses.astype(np.intp, copy=False), used, th, info, r_all, bool(three_d))


def _decide_numpy(
    positions: NDArray, times: NDArray, sensors: NDArray, seed: int, c: float,
    config: LocatorConfig,
) -> _Decision | None:
    """Steps 1-4 of the module docstring and the final robust fit, in numpy (the reference)."""
    tol_m = config.association_tolerance_s * c
    # the gate (see gate()), computed once for both bounds
    dt = times - times[seed]
    sep = np.sqrt(((positions - positions[seed]) ** 2).sum(-1))
    bound = np.minimum(sep, config.max_range_m) / c + config.association_tolerance_s
    other = (sensors != sensors[seed]) & (dt >= -1e-9)
    strict_mask = other & (dt <= bound)
    if len(np.unique(sensors[strict_mask])) < config.min_sensors - 1:
        return None  # cheap exit: too few sensors could have heard the seed's source
    cand = np.flatnonzero(other & (dt <= bound + HEALTH_GATE_S))
    pool = np.r_[seed, cand]  # pool index 0 is the seed
    possible = np.r_[True, strict_mask[cand]]
    offset = positions[seed]
    pos = positions[pool] - offset
    rho = dt[pool] * c
    sen = sensors[pool]
    groups = _Groups(sen)

    # pairs of possible candidates at two distinct sensors, mutually possible: the candidates
    # at the sensors nearest the seed's first (see CONSENSUS_CANDIDATES)
    cand = np.flatnonzero(possible)[1:]
    cand_sep = np.sqrt(pos[cand, 0] ** 2 + pos[cand, 1] ** 2 + pos[cand, 2] ** 2)
    early = np.sort(cand[np.argsort(cand_sep, kind="stable")[:CONSENSUS_CANDIDATES]])
    if len(early) < 2:
        return None
    a, b = np.triu_indices(len(early), k=1)
    ii, jj = early[a], early[b]
    keep = sen[ii] != sen[jj]
    sep_ij = np.sqrt(((pos[ii] - pos[jj]) ** 2).sum(-1))
    keep &= np.abs(rho[ii] - rho[jj]) <= sep_ij + tol_m
    ii, jj = ii[keep], jj[keep]
    if len(ii) == 0:
        return None
    tri = np.stack([np.zeros_like(ii), ii, jj], axis=1)
    theta = _consensus_theta(pos, rho, sen, tri, tol_m, config, groups=groups)
    if theta is None:
        return None

    fit = _refine_members(pos, rho, sen, theta, tol_m, config, groups=groups)
    if fit is None:
        return None
    theta, members = fit
    if 0 not in members or len(members) < config.min_sensors:
        return None
    if not _seed_survives_guard(pos, rho, sen, members, tol_m, config, groups):
        return None

    # final set: the closest pulse of every sensor within the health gate
    mins, arg = _best_per_sensor(np.abs(_residuals(pos, rho, theta))[None], sen, groups)
    chosen = np.sort(arg[0][mins[0] <= HEALTH_GATE_S * c])
    used = np.abs(_residuals(pos[chosen], rho[chosen], theta)) <= tol_m
    if 0 not in chosen[used] or used.sum() < config.min_sensors:
        return None
    three_d = bool(config.solve_3d and used.sum() >= config.min_sensors_3d)
    iterations = config.gauss_newton_iterations if three_d else 2
    th, _, info = _fit(pos[chosen[used]], rho[chosen[used]], theta, config, iterations, three_d)
    r_all = _residuals(pos[chosen], rho[chosen], th)
    return pool[chosen], used, th, info, r_all, three_d


def _config_3d(config: LocatorConfig, solve_3d: bool) -> LocatorConfig:
    """``config`` with ``solve_3d`` set (cached: dataclasses.replace costs ~20 µs a call)."""
    if config.solve_3d == solve_3d:
        return config
    key = (id(config), solve_3d)
    hit = _CONFIG_3D.get(key)
    if hit is None or hit[0] is not config:
        if len(_CONFIG_3D) > 64:
            _CONFIG_3D.clear()
        hit = _CONFIG_3D[key] = (config, replace(config, solve_3d=solve_3d))
    return hit[1]


_CONFIG_3D: dict[tuple[int, bool], tuple[LocatorConfig, LocatorConfig]] = {}


def heard_share(source: NDArray, used: NDArray, known: NDArray, hearing_range_m: float) -> float:
    """Share of the listening sensors near a fitted source that heard it.

    "Near" = horizontally within ``max(hearing_range_m, median distance of the sensors that
    heard it)``. A real shot is heard by nearly every sensor near it (Pittsburgh: >= 85 % out
    to 800 m); a coincidental fit of echoes or unrelated pulses is "heard" by a few scattered
    sensors while nearer ones stayed silent.

    Runs compiled (``association_jit.HEARD``) when numba is installed: the same floats.
    """
    if HEARD is not None and len(used):
        return HEARD(
            np.ascontiguousarray(source, float), np.ascontiguousarray(used, float),
            np.ascontiguousarray(known, float), float(hearing_range_m),
        )
    return _heard_share_numpy(source, used, known, hearing_range_m)


def _heard_share_numpy(
    source: NDArray, used: NDArray, known: NDArray, hearing_range_m: float
) -> float:
    """:func:`heard_share` in numpy (the reference the compiled kernel is tested against)."""
    du = np.sort(np.hypot(*(used[:, :2] - source[:2]).T))
    dk = np.hypot(*(known[:, :2] - source[:2]).T)
    radius = max(float(du[len(du) // 2]), hearing_range_m) + 1e-6
    return float((du <= radius).sum() / max((dk <= radius).sum(), 1))


def _residuals(pos: NDArray, rho: NDArray, theta: NDArray) -> NDArray:
    """Observed minus predicted range (m) for one 3-D source θ = (x, y, z, τ)."""
    d = np.sqrt(((pos - theta[:3]) ** 2).sum(-1))
    return rho - theta[3] - d


def _consensus_theta(
    pos: NDArray, rho: NDArray, sen: NDArray, tri: NDArray, tol_m: float,
    config: LocatorConfig, exclude_seed: bool = False, groups: _Groups | None = None,
) -> NDArray | None:
    """Best hypothesis (x, y, 0, τ) over the given triples by per-sensor MSAC cost."""
    p, tau, ok = triple_hypotheses_one(pos, rho, tri)
    ok &= (p * p).sum(-1) <= config.max_range_m**2
    if not ok.any():
        return None
    p, tau = p[ok], tau[ok]
    # |observed - predicted| range of every pulse under every hypothesis (H, P), source at z=0
    dx = p[:, 0, None] - pos[None, :, 0]
    dy = p[:, 1, None] - pos[None, :, 1]
    absr = np.abs(rho[None, :] - tau[:, None] - np.sqrt(dx * dx + dy * dy + pos[None, :, 2] ** 2))
    if exclude_seed:
        absr[:, 0] = np.inf
    # MSAC: truncate before the per-sensor min (same result: min and clip commute)
    np.minimum(absr, tol_m, out=absr)
    g = groups if groups is not None else _Groups(sen)
    mins = np.minimum.reduceat(absr[:, g.order], g.starts, axis=1)
    best = int(np.argmin((mins * mins).sum(-1)))
    return np.array([p[best, 0], p[best, 1], 0.0, tau[best]])


def _refine_members(
    pos: NDArray, rho: NDArray, sen: NDArray, theta: NDArray, tol_m: float,
    config: LocatorConfig, exclude_seed: bool = False, groups: _Groups | None = None,
) -> tuple[NDArray, NDArray] | None:
    """Select the best pulse per consistent sensor, fit, re-select, fit. (theta, members)."""
    members = None
    for _ in range(3):
        absr = np.abs(_residuals(pos, rho, theta))
        if exclude_seed:
            absr[0] = np.inf
        mins, arg = _best_per_sensor(absr[None], sen, groups)
        new = np.sort(arg[0][mins[0] <= tol_m])
        if len(new) < 3:
            return None
        if members is not None and np.array_equal(new, members):
            break
        members = new
        th, _, _ = _fit(pos[members], rho[members], theta, config, config.gauss_newton_iterations)
        if not np.all(np.isfinite(th)):
            return None
        theta = th
    assert members is not None
    return theta, members


def _seed_survives_guard(
    pos: NDArray, rho: NDArray, sen: NDArray, members: NDArray, tol_m: float,
    config: LocatorConfig, groups: _Groups | None = None,
) -> bool:
    """False if the fit's other pulses, without the seed, support a better source."""
    others = members[members != 0][:_GUARD_MEMBERS]
    if len(others) < 3:
        return True
    ii, jj, kk = np.array(
        [(a, b, d) for x, a in enumerate(others) for y, b in enumerate(others[x + 1 :], x + 1)
         for d in others[y + 1 :]]
    ).T
    alt = _consensus_theta(
        pos, rho, sen, np.stack([ii, jj, kk], 1), tol_m, config, exclude_seed=True,
        groups=groups,
    )
    if alt is None:
        return True
    fit = _refine_members(pos, rho, sen, alt, tol_m, config, exclude_seed=True, groups=groups)
    if fit is None:
        return True
    theta, alt_members = fit
    seed_fits = abs(float(_residuals(pos[:1], rho[:1], theta)[0])) <= tol_m
    return seed_fits or len(alt_members) <= len(members)


def echo_shadowed(
    member_times: NDArray,
    member_sensors: NDArray,
    member_db: NDArray,
    prior_times: NDArray,
    prior_sensors: NDArray,
    prior_db: NDArray,
    horizon_s: float,
    repeat_tol_s: float,
    level_margin_db: float = 0.0,
    member_level: NDArray | None = None,
    prior_level: NDArray | None = None,
    repeat_level_db: float = math.inf,
    prior_partner: NDArray | None = None,
) -> NDArray[np.bool_]:
    """Which members of a fit are probably echoes (reverberation) of an earlier, louder pulse.

    Physics: a reflection reaches a sensor *after* the direct sound of its source (longer path)
    and is *weaker* (longer spreading + reflection loss); an audible reflection's path is at
    most the hearing range, so it trails the direct sound by at most ``horizon_s``
    (``max_range_m / c``). A member pulse is *shadowed* if its own sensor heard another pulse
    ``0 < Δt <= horizon_s`` earlier that was at least as loud, less ``level_margin_db`` of
    measurement scatter (``*_db``: SNR; NaN = unknown, never shadows: without loudness a later
    pulse could as well be a new source).

    Exception — a burst: the previous round fired from the *same place* precedes every member
    by the *same* Δt (the round interval). A member with an earlier pulse (of any loudness)
    whose Δt is shared, within ``repeat_tol_s`` (the physical spread of a true repeat, a few
    ms: ``rules.REPEAT_SPREAD_S``), by earlier pulses at at least half of the members'
    sensors (and at least three: enough to fix a source) is that round's repeat, never an
    echo, whatever louder reverberation of the earlier round preceded it. A partner must be
    as loud as the member (``*_level``: peak dB, NaN = unknown: no test) within
    ``repeat_level_db``: the next round of one gun reaches a sensor at the same level along
    the same path, while a reflection off a wall by the shooter trails by a common delay too
    but is 6 dB or more weaker. ``prior_partner`` (bool per earlier pulse, None = all) says
    which earlier pulses may be a repeat's partner: the engine passes the members of located
    rounds, so that pieces of unlocated sounds cannot vouch for each other. (Half, not all:
    a sensor may have missed either round. A mere three is not enough: a coincidental fit
    built from echoes can borrow a few direct pulses of the next round, which trail the
    previous round by the round interval.)

    Times in seconds (any common reference), sensors as comparable codes (earlier pulses at
    other sensors may be included: they never pair with a member). Pure; (M,) mask.

    Runs compiled (``association_jit.ECHO``) when numba is installed, else in numpy
    (:func:`_echo_shadowed_numpy`); both give the same mask.
    """
    if member_level is None or prior_level is None:
        member_level = np.full(len(member_times), np.nan)
        prior_level = np.full(len(prior_times), np.nan)
    if prior_partner is None:
        prior_partner = np.ones(len(prior_times), bool)
    if ECHO is None or len(member_times) == 0 or len(prior_times) == 0:
        return _echo_shadowed_numpy(
            member_times, member_sensors, member_db, prior_times, prior_sensors, prior_db,
            horizon_s, repeat_tol_s, level_margin_db, member_level, prior_level,
            repeat_level_db, prior_partner,
        )
    ms, ps = np.asarray(member_sensors), np.asarray(prior_sensors)
    if ms.dtype.kind != "f" or ps.dtype.kind != "f":
        # other comparable codes (integers, strings): their ranks over both sides, exact floats
        ranks = np.unique(np.concatenate([ms, ps]), return_inverse=True)[1].reshape(-1)
        ms, ps = ranks[: len(ms)], ranks[len(ms) :]
    return ECHO(
        np.ascontiguousarray(member_times, float), np.ascontiguousarray(ms, float),
        np.ascontiguousarray(member_db, float), np.ascontiguousarray(prior_times, float),
        np.ascontiguousarray(ps, float), np.ascontiguousarray(prior_db, float),
        float(horizon_s), float(repeat_tol_s), float(level_margin_db),
        np.ascontiguousarray(member_level, float), np.ascontiguousarray(prior_level, float),
        float(repeat_level_db), np.ascontiguousarray(prior_partner, float),
    )


def _echo_shadowed_numpy(  # (echo_shadowed's parameters, in its order)
    member_times: NDArray, member_sensors: NDArray, member_db: NDArray,
    prior_times: NDArray, prior_sensors: NDArray, prior_db: NDArray,
    horizon_s: float, repeat_tol_s: float, level_margin_db: float = 0.0,
    member_level: NDArray | None = None, prior_level: NDArray | None = None,
    repeat_level_db: float = math.inf, prior_partner: NDArray | None = None,
) -> NDArray[np.bool_]:
    """:func:`echo_shadowed` in numpy (the reference the compiled kernel is tested against)."""
    mt = np.asarray(member_times, float)
    ms = np.asarray(member_sensors)
    mdb = np.asarray(member_db, float)
    pt = np.asarray(prior_times, float)
    ps = np.asarray(prior_sensors)
    pdb = np.asarray(prior_db, float)
    if len(mt) == 0 or len(pt) == 0:
        return np.zeros(len(mt), bool)
    delay = mt[:, None] - pt[None, :]  # (M, P)
    timing = (ms[:, None] == ps[None, :]) & (delay > 1e-9) & (delay <= horizon_s)
    # False where either loudness is NaN
    louder = timing & (pdb[None, :] >= mdb[:, None] - level_margin_db)
    if not louder.any():
        return np.zeros(len(mt), bool)
    mlv = np.full(len(mt), np.nan) if member_level is None else np.asarray(member_level, float)
    plv = np.full(len(pt), np.nan) if prior_level is None else np.asarray(prior_level, float)
    # a repeat's partner is as loud (NaN: no test)
    ok = np.ones(len(pt), bool) if prior_partner is None else np.asarray(prior_partner, bool)
    partner = timing & ok[None, :] & ~(np.abs(mlv[:, None] - plv[None, :]) > repeat_level_db)
    ti, tj = np.nonzero(partner)
    td = delay[ti, tj]
    # a member is a repeat if one of its delays is shared by enough members
    same = np.abs(td[:, None] - td[None, :]) <= repeat_tol_s  # (T, T)
    sharing = np.zeros((len(td), len(mt)), bool)
    rows, cols = np.nonzero(same)
    sharing[rows, ti[cols]] = True
    round_delay = sharing.sum(1) >= max(3, math.ceil(len(mt) / 2))
    repeat = np.zeros(len(mt), bool)
    repeat[ti[round_delay]] = True
    out = louder.any(1) & ~repeat
    return out
