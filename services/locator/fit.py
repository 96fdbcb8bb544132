"""Fit the gunfire scoring model from labelled incidents, and make the default labels.

* :func:`read_labels_csv` reads ``labels.csv`` (format in docs/scoring.md): one row per
  located incident, the columns of :class:`~services.locator.scoring.IncidentFeatures`
  (empty cell = not available) plus ``label`` in {gunfire, fireworks, other} and an optional
  ``incident_id``.
* :func:`fit` refits a :class:`ScoringModel`: an L2-regularised multinomial logistic regression
  (scipy L-BFGS), keeping the base model's feature list, thresholds and regularisation.
* :func:`evaluate` reports calibration: Brier score of P(gunfire), log loss, reliability bins,
  a rank AUC of gunfire vs the rest and the confusion of classes.
* :func:`synthetic_incidents` makes simulator-labelled incidents (``simulate.py``); the packaged
  default model is ``default_model()`` = a fit on those, regenerated with
  ``python -m services.locator.fit --write services/locator/scoring_model.json``.

Everything except :func:`read_labels_csv`/:func:`write_labels_csv` (file I/O by contract) and
``main`` is pure and deterministic for a given input / seed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from services.locator import simulate
from services.locator.evidence import PulseEvidence, ShotEvidence
from services.locator.scoring import (
    CLASSES,
    FEATURE_COLUMNS,
    FeatureSpec,
    IncidentFeatures,
    Label,
    ScoringModel,
    Thresholds,
    extract_features,
    frozen_json,
    transformed,
)

#: Fewest rows of each label that a fit accepts.
MIN_ROWS_PER_LABEL = 5
_INT_COLUMNS = {"sensor_count", "rounds"}


@dataclass(frozen=True)
class LabelledIncident:
    features: IncidentFeatures
    label: Label
    incident_id: str = ""


# ---------------------------------------------------------------------------------- CSV
def read_labels_csv(path: Path) -> list[LabelledIncident]:
    """Read labelled incidents.

    Raises ValueError with the file, line number and column for: a missing ``label`` column,
    unknown columns, a label outside {gunfire, fireworks, other}, a non-numeric, non-finite or
    negative value, a non-integer count, or a file without rows. OSError if unreadable.
    """
    p = Path(path)
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise ValueError(f"{p}: line 1: empty file, expected a header row")
        header = [h.strip() for h in header]
        reader.fieldnames = header
        allowed = {*FEATURE_COLUMNS, "label", "incident_id"}
        unknown = [h for h in header if h not in allowed]
        if unknown:
            raise ValueError(
                f"{p}: line 1: unknown column(s) {unknown}; allowed: "
                f"label, incident_id, {', '.join(FEATURE_COLUMNS)}"
            )
        if "label" not in header:
            raise ValueError(f"{p}: line 1: missing column 'label'")
        rows: list[LabelledIncident] = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise ValueError(f"{p}: line {line}: more cells than header columns")
            label = (row.get("label") or "").strip()
            if label not in CLASSES:
                raise ValueError(
                    f"{p}: line {line}: column 'label': {label!r} is not one of {list(CLASSES)}"
                )
            values: dict[str, Any] = {}
            for col in FEATURE_COLUMNS:
                cell = (row.get(col) or "").strip()
                if cell:
                    values[col] = _cell(cell, col, f"{p}: line {line}: column {col!r}")
            rows.append(
                LabelledIncident(
                    IncidentFeatures(**values), label, (row.get("incident_id") or "").strip()
                )
            )
    if not rows:
        raise ValueError(f"{p}: line 2: no data rows")
    return rows


def _cell(cell: str, col: str, where: str) -> float | int:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {cell!r} must be finite and >= 0")
    if col in _INT_COLUMNS:
        if value != int(value) or value < 1:
            raise ValueError(f"{where}: {cell!r} must be a whole number >= 1")
        return int(value)
    return value


def write_labels_csv(rows: Sequence[LabelledIncident], path: Path) -> None:
    """Write rows in the format :func:`read_labels_csv` reads. Raises OSError."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["incident_id", "label", *FEATURE_COLUMNS])
        for r in rows:
            cells = []
            for col in FEATURE_COLUMNS:
                v = getattr(r.features, col)
                cells.append("" if v is None else (str(v) if isinstance(v, int) else f"{v:.6g}"))
            w.writerow([r.incident_id, r.label, *cells])


# ---------------------------------------------------------------------------------- fit
def _design(rows: Sequence[LabelledIncident], names: Sequence[str]) -> np.ndarray:
    """Transformed (uncentred) inputs, NaN where missing, shape (n, f)."""
    return np.array(
        [[np.nan if v is None else v for v in transformed(r.features, names)] for r in rows],
        dtype=float,
    ).reshape(len(rows), len(names))


def _labels(rows: Sequence[LabelledIncident]) -> np.ndarray:
    return np.array([CLASSES.index(r.label) for r in rows], dtype=int)


def _rows_digest(rows: Sequence[LabelledIncident]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr((r.label, *(getattr(r.features, c) for c in FEATURE_COLUMNS))).encode())
    return h.hexdigest()


def fit(rows: Sequence[LabelledIncident], base: ScoringModel) -> ScoringModel:
    """Refit weights, intercepts and the neutral centre/scale of every input of ``base``.

    Keeps ``base``'s feature list, thresholds, ``l2``, ``balance_classes`` and neutral
    features (their weights are exactly 0). Centre of a
    feature = the mean of its per-class means (a neutral point between the classes; missing
    values are imputed there), scale = the class-balanced within-class standard deviation.
    With ``balance_classes`` every label carries equal total weight, so probabilities are
    calibrated for equal priors. The new version is ``<base version>+refit.<data digest>``.

    Raises ValueError if a label has fewer than :data:`MIN_ROWS_PER_LABEL` rows or a fit
    does not converge.
    """
    y = _labels(rows)
    counts = np.bincount(y, minlength=len(CLASSES))
    if (counts < MIN_ROWS_PER_LABEL).any():
        have = dict(zip(CLASSES, counts.tolist(), strict=True))
        raise ValueError(
            f"need at least {MIN_ROWS_PER_LABEL} rows of each label {list(CLASSES)}, got {have}"
        )
    names = [f.name for f in base.features]
    raw = _design(rows, names)
    specs = []
    for j, name in enumerate(names):
        means, variances = [], []
        for k in range(len(CLASSES)):
            col = raw[y == k, j]
            col = col[~np.isnan(col)]
            if len(col):
                means.append(col.mean())
                variances.append(col.var())
        if not means:  # never observed: keep the base's neutral point
            specs.append(base.features[j])
            continue
        scale = math.sqrt(float(np.mean(variances)))
        specs.append(FeatureSpec(name, float(np.mean(means)), scale if scale > 1e-9 else 1.0))
    center = np.array([s.center for s in specs])
    scale = np.array([s.scale for s in specs])
    standard = (raw - center) / scale
    # the range each input was seen in: scoring clips to it (never extrapolates)
    specs = [
        replace(spec, low=float(np.nanmin(col)), high=float(np.nanmax(col)))
        if np.isfinite(col).any() else spec
        for spec, col in zip(specs, standard.T, strict=True)
    ]
    x = np.nan_to_num(standard, nan=0.0)
    held = [j for j, name in enumerate(names) if name in base.neutral]
    x[:, held] = 0.0  # neutral inputs carry no evidence: their weights fit to exactly 0
    sample_w = (
        (len(y) / (len(CLASSES) * counts))[y] if base.balance_classes else np.ones(len(y))
    )
    w_mat, b = _multinomial_lr(x, y, sample_w, base.l2)
    w_mat[:, held] = 0.0
    digest = _rows_digest(rows)
    parent = base.version.split("+refit.")[0]
    model = replace(
        base,
        version=f"{parent}+refit.{digest[:12]}",
        features=tuple(specs),
        weights=tuple(tuple(float(v) for v in row) for row in w_mat),
        intercepts=tuple(float(v) for v in b),
    )
    report = evaluate(model, rows)
    provenance = {
        "parent_version": base.version,
        "trained_on": f"{len(rows)} labelled incidents",
        "label_counts": dict(zip(CLASSES, counts.tolist(), strict=True)),
        "data_sha256": digest,
        "training_calibration": report,
    }
    return replace(model, provenance=frozen_json(provenance))


def _multinomial_lr(
    x: np.ndarray, y: np.ndarray, sample_w: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted softmax regression with an L2 penalty on the weights (not the intercepts)."""
    _, f = x.shape
    k = len(CLASSES)
    onehot = np.eye(k)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: k * f].reshape(k, f)
        b = theta[k * f :]
        z = x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -(sample_w * (onehot * logp).sum(axis=1)).sum() + 0.5 * l2 * (w**2).sum()
        g = (np.exp(logp) - onehot) * sample_w[:, None]  # (n, k)
        grad_w = g.T @ x + l2 * w
        grad_b = g.sum(axis=0)
        return float(loss), np.concatenate([grad_w.ravel(), grad_b])

    res = minimize(objective, np.zeros(k * f + k), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000})
    if not res.success and "ABNORMAL" not in str(res.message):
        raise ValueError(f"logistic regression did not converge: {res.message}")
    theta = res.x
    return theta[: k * f].reshape(k, f), theta[k * f :]


# ---------------------------------------------------------------------------------- report
def auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Rank AUC (Mann–Whitney): P(score of a positive > score of a negative), ties = 1/2."""
    s = np.asarray(scores, float)
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(model: ScoringModel, rows: Sequence[LabelledIncident], bins: int = 10) -> dict:
    """Calibration and discrimination of ``model`` on ``rows`` (JSON-able dict).

    ``brier``: mean (P(gunfire) - [label == gunfire])²; ``log_loss``: mean -log P(label);
    ``reliability``: per probability bin, count, mean predicted and observed gunfire share;
    ``auc_gunfire``; ``confusion[label][class]``: counts of assigned classes per true label.
    """
    probs = [model.probabilities(r.features) for r in rows]
    p_gun = np.array([p["gunfire"] for p in probs])
    is_gun = np.array([r.label == "gunfire" for r in rows])
    log_loss = float(np.mean([-math.log(max(p[r.label], 1e-15)) for p, r in
                              zip(probs, rows, strict=True)]))
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p_gun, edges) - 1, 0, bins - 1)
    reliability = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            reliability.append({
                "bin": [round(float(edges[b]), 2), round(float(edges[b + 1]), 2)],
                "count": int(sel.sum()),
                "mean_predicted": round(float(p_gun[sel].mean()), 4),
                "observed": round(float(is_gun[sel].mean()), 4),
            })
    confusion: dict[str, dict[str, int]] = {
        c: {k: 0 for k in ("gunfire", "probable_gunfire", "fireworks", "other")} for c in CLASSES
    }
    for p, r in zip(probs, rows, strict=True):
        confusion[r.label][model.classify(p).classification] += 1
    return {
        "rows": len(rows),
        "brier": round(float(np.mean((p_gun - is_gun) ** 2)), 5),
        "log_loss": round(log_loss, 5),
        "auc_gunfire": round(auc(p_gun, is_gun), 5),
        "reliability": reliability,
        "confusion": confusion,
    }


# ---------------------------------------------------------------------------------- synthetic
#: Share of training incidents whose sensors report all features / only level+SNR / nothing.
FEATURE_MODES: tuple[tuple[simulate.FeatureMode, float], ...] = (
    ("full", 0.6), ("level_only", 0.25), ("none", 0.15),
)


def _residual(rng: np.random.Generator, coincidence: bool) -> float:
    """Solve residual RMS (s). Real shots: ~0.1 ms (clean) to ~10 ms (the real Pittsburgh
    array gives ~6 ms: ms-rounded times, urban paths); coincidental fits: 3–20 ms."""
    if coincidence:
        return float(np.exp(rng.uniform(np.log(3e-3), np.log(20e-3))))
    return float(np.exp(rng.uniform(np.log(5e-5), np.log(12e-3))))


def _evidence(
    pulses: Sequence[simulate.HeardPulse], k: int, times: Sequence[float], residual: float,
    rng: np.random.Generator,
) -> ShotEvidence | None:
    own = [p for p in pulses if p.round_index == k]
    if len(own) < 3:
        return None
    # the associator may drop some sensors; the located position is a few metres off
    keep = max(3, round(len(own) * rng.uniform(0.6, 1.0)))
    own = [own[i] for i in sorted(rng.choice(len(own), keep, replace=False))]
    ev = tuple(
        PulseEvidence(
            f"s{p.sensor}", max(1.0, p.distance_m + float(rng.normal(0, 5.0))), p.peak_db,
            p.snr_db, p.rise_time_ms, p.duration_ms, p.spectral_centroid_hz,
        )
        for p in own
    )
    intervals = tuple(float(v) for v in np.diff(times[: k + 1]))
    return ShotEvidence(ev, len(ev), residual, intervals)


def _mode(rng: np.random.Generator) -> simulate.FeatureMode:
    names = [m for m, _ in FEATURE_MODES]
    return names[int(rng.choice(len(names), p=[p for _, p in FEATURE_MODES]))]


def _coincidence(arrays: Sequence[simulate.CityArray], rng: np.random.Generator) -> ShotEvidence:
    """3–7 unrelated noise pulses at different sensors that happen to fit a source."""
    arr = arrays[int(rng.integers(len(arrays)))]
    enu = arr.enu()
    n = int(rng.integers(3, min(8, len(enu)) + 1))
    idx = rng.choice(len(enu), n, replace=False)
    h = arr.half_side_m
    src = np.array([*rng.uniform(-h, h, 2), arr.ground_alt_m])
    d = np.linalg.norm(enu[idx] - src, axis=1)
    mode = _mode(rng)
    pulses = []
    for i in range(n):
        snr = float(rng.uniform(simulate.MIN_SNR_DB, 25.0))
        level = min(simulate.NOISE_FLOOR_DB + rng.normal(0, 3) + snr, simulate.SENSOR_CLIP_DB)
        full = mode == "full"
        has_level = mode != "none"
        pulses.append(PulseEvidence(
            f"s{idx[i]}", float(max(d[i], 1.0)),
            float(level) if has_level else None, snr if has_level else None,
            float(np.exp(rng.uniform(np.log(0.5), np.log(30.0)))) if full else None,
            float(np.exp(rng.uniform(np.log(3.0), np.log(300.0)))) if full else None,
            float(np.exp(rng.uniform(np.log(100.0), np.log(4000.0)))) if full else None,
        ))
    k = int(rng.integers(0, 3))
    intervals = tuple(float(v) for v in rng.uniform(0.5, 60.0, k))
    return ShotEvidence(tuple(pulses), n, _residual(rng, True), intervals)


def synthetic_incidents(n_per_class: int, rng: np.random.Generator) -> list[LabelledIncident]:
    """Simulator-labelled located rounds: ``n_per_class`` gunfire, fireworks and other.

    Each is one round (picked at random within its event, with the intervals so far) of an
    event in a random array (6–30 sensors per square mile), heard per ``simulate``'s
    propagation model, with a random feature mode (:data:`FEATURE_MODES`). ``other`` is half
    impulsive urban sources, half coincidental fits of unrelated noise pulses.
    """
    arrays = [
        simulate.build_array(density_per_sq_mi=d, area_sq_mi=a, seed=int(rng.integers(1 << 30)))
        for d, a in ((6, 4.0), (10, 3.0), (15, 2.0), (25, 2.0), (30, 1.5))
    ]
    out: list[LabelledIncident] = []
    for label in CLASSES:
        made = 0
        while made < n_per_class:
            if label == "other" and rng.random() < 0.5:
                ev: ShotEvidence | None = _coincidence(arrays, rng)
            else:
                arr = arrays[int(rng.integers(len(arrays)))]
                if label == "gunfire":
                    rounds = 1 if rng.random() < 0.4 else int(rng.integers(2, 9))
                    times = simulate.gunfire_times(rng, 0.0, rounds)
                elif label == "fireworks":
                    times = simulate.fireworks_times(rng, 0.0)
                else:
                    n = int(rng.integers(1, 5))
                    times = list(np.concatenate([[0.0], np.cumsum(rng.exponential(3.0, n - 1))]))
                pulses = simulate.event_pulses(
                    label, arr, rng, times_s=times, feature_mode=_mode(rng)
                )
                k = int(rng.integers(len(times)))
                ev = _evidence(pulses, k, times, _residual(rng, False), rng)
            if ev is None:
                continue
            out.append(LabelledIncident(extract_features(ev), label, f"sim-{label}-{made:05d}"))
            made += 1
    return out


# ---------------------------------------------------------------------------------- default
DEFAULT_SEED = 2025
DEFAULT_ROWS_PER_CLASS = 1500
DEFAULT_VERSION = "1.0.0-sim"


#: Inputs with no real non-gunfire evidence: the kit's real recordings are gunfire only, so
#: what fireworks or urban noise read as on these is the simulator's assumption. The pulse
#: shape (rise, duration, centroid, as the sensor defines them: docs/sensor.md) is held
#: neutral; a refit on real labelled non-gunfire may release them (edit the model file's
#: ``fit.neutral_features``).
NEUTRAL_FEATURES = ("log_rise_time", "log_duration", "log_centroid")


def initial_model() -> ScoringModel:
    """The untrained starting point: the feature list, thresholds and regularisation."""
    names = (
        "log_rise_time", "log_duration", "log_centroid", "source_level", "level_spread",
        "log_residual", "log_sensors", "log_rounds", "log_interval", "interval_cv",
    )
    return ScoringModel(
        version=DEFAULT_VERSION,
        features=tuple(FeatureSpec(n, 0.0, 1.0) for n in names),
        weights=tuple((0.0,) * len(names) for _ in CLASSES),
        intercepts=(0.0,) * len(CLASSES),
        thresholds=Thresholds(gunfire=0.8, probable_gunfire=0.25, fireworks=0.5),
        l2=1.0,
        balance_classes=True,
        neutral=NEUTRAL_FEATURES,
    )


def default_model(
    seed: int = DEFAULT_SEED, n_per_class: int = DEFAULT_ROWS_PER_CLASS
) -> ScoringModel:
    """The packaged model: a fit of :func:`initial_model` on :func:`synthetic_incidents`,
    with held-out calibration (a second, independently seeded sample) in its provenance."""
    rng = np.random.default_rng(seed)
    train = synthetic_incidents(n_per_class, rng)
    held_out = synthetic_incidents(max(n_per_class // 3, MIN_ROWS_PER_LABEL), rng)
    model = fit(train, initial_model())
    prov = {
        "trained_on": (
            f"simulator-labelled incidents (services/locator/simulate.py), {n_per_class} per "
            f"class, seed {seed}; NOT real labelled incidents — see docs/scoring.md"
        ),
        "regenerate": "python -m services.locator.fit --write services/locator/scoring_model.json",
        "seed": seed,
        "rows_per_class": n_per_class,
        "feature_modes": {m: p for m, p in FEATURE_MODES},
        "training_calibration": model.provenance["training_calibration"],
        "held_out_calibration": evaluate(model, held_out),
    }
    return replace(model, version=DEFAULT_VERSION, provenance=frozen_json(prov))


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the default model file, or refit one from a labels CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labels", nargs="?", type=Path, help="labels.csv to refit from")
    ap.add_argument("--base", type=Path, default=None, help="base model (default: packaged)")
    ap.add_argument("--write", type=Path, required=True, help="where to write the model")
    args = ap.parse_args(argv)
    try:
        if args.labels is None:
            model = default_model()
        else:
            model = fit(read_labels_csv(args.labels), ScoringModel.load(args.base))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.save(args.write)
    summary = model.provenance.get("held_out_calibration") or model.provenance.get(
        "training_calibration"
    )
    print(json.dumps({"version": model.version, **{k: summary[k] for k in
                      ("rows", "brier", "log_loss", "auc_gunfire")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
