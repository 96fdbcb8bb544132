"""Gunfire probability and class of a located round, from a versioned, refittable model.

The model is a small multinomial logistic regression over engineered incident features
(:class:`IncidentFeatures`): median rise time, duration and spectral centroid of the pulses,
the spreading-corrected source level (``peak_db + 20·log10(distance / 1 m)``, median over
sensors) and its spread across sensors, the solve's residual RMS, the number of sensors, and
the round cadence (number of rounds, median interval and its coefficient of variation).

Each feature is transformed (logs where the physics is multiplicative), centred on a
*neutral* value (the midpoint of the class means in the training data) and scaled. A feature
the sensors did not report is imputed as exactly neutral: it adds no evidence either way, so
the model still works when sensors send no acoustic features at all.

Classes: ``P(gunfire)`` is the reported probability (calibrated for equal class priors, see
docs/scoring.md). The class is, in order: ``gunfire`` if ``P(gunfire) >= thresholds.gunfire``;
``probable_gunfire`` if ``P(gunfire) >= thresholds.probable_gunfire`` (gunfire cannot be ruled
out: an uninformative round, 1/3 each, lands here); ``fireworks`` if the fireworks evidence
dominates (``P(fireworks) >= thresholds.fireworks`` and above ``P(other)``); else ``other``.

Parameters, thresholds, version and provenance live in a JSON file (default: the packaged
``scoring_model.json``, refit with ``fit.py``; docs/scoring.md says what they rest on).
Scoring is pure and allocation-light (called once per located round).
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from services.locator.evidence import Score, ShotEvidence

FORMAT = "shotline.scoring-model"
FORMAT_VERSION = 1
CLASSES: tuple[str, str, str] = ("gunfire", "fireworks", "other")
DEFAULT_PATH = Path(__file__).with_name("scoring_model.json")

Label = Literal["gunfire", "fireworks", "other"]


@dataclass(frozen=True)
class IncidentFeatures:
    """Raw, human-unit features of one located round (None = not available).

    These are also the columns of ``labels.csv`` (see ``fit.read_labels_csv``).
    """

    rise_time_ms: float | None = None  # median over pulses
    duration_ms: float | None = None  # median over pulses
    spectral_centroid_hz: float | None = None  # median over pulses
    source_level_db: float | None = None  # median of peak_db + 20·log10(distance / 1 m)
    source_level_spread_db: float | None = None  # robust std of that over sensors (>= 3)
    residual_rms_s: float | None = None
    sensor_count: int | None = None
    rounds: int | None = None  # rounds of the incident so far, this one included
    interval_median_s: float | None = None  # median of the emission intervals (>= 1)
    interval_cv: float | None = None  # std / mean of the intervals (>= 2 intervals)


FEATURE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(IncidentFeatures))


def _log10(floor: float) -> Any:
    return lambda v: math.log10(max(v, floor))


#: Model input name -> (raw column, transform). The transform is applied before centring.
TRANSFORMS: dict[str, tuple[str, Any]] = {
    "log_rise_time": ("rise_time_ms", _log10(0.01)),
    "log_duration": ("duration_ms", _log10(0.1)),
    "log_centroid": ("spectral_centroid_hz", _log10(10.0)),
    "source_level": ("source_level_db", float),
    "level_spread": ("source_level_spread_db", float),
    "log_residual": ("residual_rms_s", lambda v: math.log10(max(v, 1e-5))),
    "log_sensors": ("sensor_count", lambda v: math.log2(max(v, 1))),
    "log_rounds": ("rounds", lambda v: math.log2(max(v, 1))),
    "log_interval": ("interval_median_s", _log10(1e-3)),
    "interval_cv": ("interval_cv", lambda v: min(float(v), 3.0)),
}


def _spread(values: Sequence[float]) -> float:
    """Robust standard deviation: 1.4826 x median absolute deviation."""
    med = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - med) for v in values)


def _pstdev(values: Sequence[float], mean: float) -> float:
    """Population standard deviation about ``mean`` in floats.

    Why not ``statistics.pstdev``: it is exact in fractions, ~160 µs for a fireworks show's
    80 round intervals (7 µs in floats) on every update; a coefficient of variation needs no
    more than float precision (they agree to ~1e-15)."""
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def extract_features(evidence: ShotEvidence) -> IncidentFeatures:
    """The raw features of one located round. Pure; never raises on missing pulse features."""
    pulses = evidence.pulses

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    levels = [
        p.peak_db + 20.0 * math.log10(max(p.distance_m, 1.0))
        for p in pulses
        if p.peak_db is not None
    ]
    iv = [i for i in evidence.round_intervals_s if i >= 0]
    mean_iv = math.fsum(iv) / len(iv) if iv else 0.0
    return IncidentFeatures(
        rise_time_ms=med([p.rise_time_ms for p in pulses if p.rise_time_ms is not None]),
        duration_ms=med([p.duration_ms for p in pulses if p.duration_ms is not None]),
        spectral_centroid_hz=med(
            [p.spectral_centroid_hz for p in pulses if p.spectral_centroid_hz is not None]
        ),
        source_level_db=med(levels),
        source_level_spread_db=_spread(levels) if len(levels) >= 3 else None,
        residual_rms_s=evidence.residual_rms_s,
        sensor_count=evidence.sensor_count,
        rounds=len(evidence.round_intervals_s) + 1,
        interval_median_s=med(iv),
        interval_cv=(_pstdev(iv, mean_iv) / mean_iv) if len(iv) >= 2 and mean_iv > 0 else None,
    )


def transformed(features: IncidentFeatures, names: Sequence[str]) -> list[float | None]:
    """The transformed (not yet centred) value of each named model input; None if missing."""
    out: list[float | None] = []
    for name in names:
        column, fn = TRANSFORMS[name]
        raw = getattr(features, column)
        out.append(None if raw is None or not math.isfinite(raw) else float(fn(raw)))
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: its name (a key of :data:`TRANSFORMS`), neutral centre and scale, and
    the range of its standardised value seen in training (``low``/``high``; a value outside
    is clipped to it: a model says nothing about inputs it never saw, and a linear one would
    extrapolate one artefact, e.g. a cadence nobody fires, into a certainty)."""

    name: str
    center: float
    scale: float
    low: float = -math.inf
    high: float = math.inf


@dataclass(frozen=True)
class Thresholds:
    """Probability -> class cut-offs (see the module docstring for the order)."""

    gunfire: float = 0.8
    probable_gunfire: float = 0.25
    fireworks: float = 0.5


def _softmax(logits: Sequence[float]) -> list[float]:
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    s = sum(e)
    return [v / s for v in e]


@dataclass(frozen=True)
class ScoringModel:
    """Immutable scoring parameters with their version and provenance.

    ``weights[k][j]`` is the weight of input ``features[j]`` for class ``CLASSES[k]``.
    """

    version: str
    features: tuple[FeatureSpec, ...]
    weights: tuple[tuple[float, ...], ...]
    intercepts: tuple[float, ...]
    thresholds: Thresholds = Thresholds()
    l2: float = 1.0
    balance_classes: bool = True
    #: Inputs held neutral (weight 0 for every class, whatever the training data says):
    #: features with no real non-gunfire evidence behind them (docs/scoring.md, "Neutral
    #: features"). They stay in the model so a refit on real labels can use them.
    neutral: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    # ------------------------------------------------------------------ scoring
    def inputs(self, features: IncidentFeatures) -> list[float]:
        """Centred, scaled inputs, clipped to the training range; a missing feature is 0
        (neutral)."""
        vals = transformed(features, [f.name for f in self.features])
        return [
            0.0 if v is None else min(max((v - f.center) / f.scale, f.low), f.high)
            for v, f in zip(vals, self.features, strict=True)
        ]

    def probabilities(self, features: IncidentFeatures) -> dict[str, float]:
        """Class probabilities (gunfire, fireworks, other), summing to 1."""
        x = self.inputs(features)
        logits = [
            b + sum(w * v for w, v in zip(row, x, strict=True))
            for row, b in zip(self.weights, self.intercepts, strict=True)
        ]
        return dict(zip(CLASSES, _softmax(logits), strict=True))

    def classify(self, probs: Mapping[str, float]) -> Score:
        """Probabilities -> :class:`Score` using the thresholds (see the module docstring)."""
        p_gun, p_fw = probs["gunfire"], probs["fireworks"]
        t = self.thresholds
        # Alert-oriented order: any non-negligible chance of gunfire is reported as such;
        # only when gunfire is unlikely do we say which of fireworks / other it rather is.
        if p_gun >= t.gunfire:
            cls = "gunfire"
        elif p_gun >= t.probable_gunfire:
            cls = "probable_gunfire"
        elif p_fw >= t.fireworks and p_fw > probs["other"]:
            cls = "fireworks"
        else:
            cls = "other"
        return Score(probability=p_gun, classification=cls)  # type: ignore[arg-type]

    def score_features(self, features: IncidentFeatures) -> Score:
        return self.classify(self.probabilities(features))

    def score(self, evidence: ShotEvidence) -> Score:
        """Gunfire probability and class of one located round. Pure; does not raise."""
        return self.score_features(extract_features(evidence))

    def __call__(self, evidence: ShotEvidence) -> Score:
        return self.score(evidence)

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_version": self.version,
            "classes": list(CLASSES),
            "features": [
                {"name": f.name, "center": f.center, "scale": f.scale}
                | ({"low": f.low} if math.isfinite(f.low) else {})
                | ({"high": f.high} if math.isfinite(f.high) else {})
                for f in self.features
            ],
            "weights": {c: list(w) for c, w in zip(CLASSES, self.weights, strict=True)},
            "intercepts": dict(zip(CLASSES, self.intercepts, strict=True)),
            "thresholds": {
                "gunfire": self.thresholds.gunfire,
                "probable_gunfire": self.thresholds.probable_gunfire,
                "fireworks": self.thresholds.fireworks,
            },
            "fit": {
                "l2": self.l2,
                "balance_classes": self.balance_classes,
                "neutral_features": list(self.neutral),
            },
            "provenance": _thaw(self.provenance),
        }

    def save(self, path: Path) -> None:
        """Write the model as JSON (overwrites). Raises OSError on I/O failure."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: Any) -> ScoringModel:
        """Validate and build. Raises ValueError naming the first problem found."""
        return _parse(data)

    @classmethod
    def load(cls, path: Path | None = None) -> ScoringModel:
        """Read a model file (default: the packaged one).

        Raises ValueError naming the file and the problem for unreadable, non-JSON or invalid
        content (including an unsupported ``format_version``).
        """
        p = DEFAULT_PATH if path is None else Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise ValueError(f"{p}: cannot read scoring model: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not JSON: {exc}") from exc
        try:
            return _parse(data)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from exc


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def frozen_json(value: Any) -> Any:
    """A read-only deep copy of a JSON-like value (mappings become MappingProxyType)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen_json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen_json(v) for v in value)
    return value


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _parse(data: Any) -> ScoringModel:
    if not isinstance(data, dict):
        raise ValueError("top level must be a JSON object")
    if data.get("format") != FORMAT:
        raise ValueError(f"'format' must be {FORMAT!r}, got {data.get('format')!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"unsupported format_version {data.get('format_version')!r} "
            f"(this build reads {FORMAT_VERSION})"
        )
    for key in ("model_version", "features", "weights", "intercepts", "thresholds"):
        if key not in data:
            raise ValueError(f"missing key {key!r}")
    version = data["model_version"]
    if not isinstance(version, str) or not version:
        raise ValueError("'model_version' must be a non-empty string")
    if data.get("classes", list(CLASSES)) != list(CLASSES):
        raise ValueError(f"'classes' must be {list(CLASSES)}")
    feats = data["features"]
    if not isinstance(feats, list) or not feats:
        raise ValueError("'features' must be a non-empty list")
    specs: list[FeatureSpec] = []
    for i, f in enumerate(feats):
        if not isinstance(f, dict) or f.get("name") not in TRANSFORMS:
            name = f.get("name") if isinstance(f, dict) else f
            raise ValueError(
                f"features[{i}]: unknown feature {name!r}; known: {sorted(TRANSFORMS)}"
            )
        scale = _num(f.get("scale"), f"features[{i}].scale")
        if scale <= 0:
            raise ValueError(f"features[{i}].scale must be > 0")
        low = _num(f["low"], f"features[{i}].low") if "low" in f else -math.inf
        high = _num(f["high"], f"features[{i}].high") if "high" in f else math.inf
        if low > high:
            raise ValueError(f"features[{i}]: low must be <= high")
        specs.append(
            FeatureSpec(f["name"], _num(f.get("center"), f"features[{i}].center"), scale, low, high)
        )
    if len({s.name for s in specs}) != len(specs):
        raise ValueError("'features' lists a feature twice")
    weights, intercepts = data["weights"], data["intercepts"]
    if not isinstance(weights, dict) or not isinstance(intercepts, dict):
        raise ValueError("'weights' and 'intercepts' must be objects keyed by class")
    rows: list[tuple[float, ...]] = []
    for c in CLASSES:
        row = weights.get(c)
        if not isinstance(row, list) or len(row) != len(specs):
            raise ValueError(f"weights[{c!r}] must be a list of {len(specs)} numbers")
        rows.append(tuple(_num(v, f"weights[{c!r}][{j}]") for j, v in enumerate(row)))
    icpt = tuple(_num(intercepts.get(c), f"intercepts[{c!r}]") for c in CLASSES)
    th = data["thresholds"]
    if not isinstance(th, dict):
        raise ValueError("'thresholds' must be an object")
    t = Thresholds(
        **{k: _num(th.get(k), f"thresholds.{k}") for k in ("gunfire", "probable_gunfire",
                                                             "fireworks")}
    )
    if not (0 < t.probable_gunfire <= t.gunfire <= 1 and 0 < t.fireworks <= 1):
        raise ValueError("thresholds need 0 < probable_gunfire <= gunfire <= 1, 0 < fireworks <= 1")
    fit_cfg = data.get("fit", {})
    if not isinstance(fit_cfg, dict):
        raise ValueError("'fit' must be an object")
    l2 = _num(fit_cfg.get("l2", 1.0), "fit.l2")
    if l2 < 0:
        raise ValueError("fit.l2 must be >= 0")
    neutral = fit_cfg.get("neutral_features", [])
    names = {s.name for s in specs}
    if not isinstance(neutral, list) or any(n not in names for n in neutral):
        raise ValueError(f"fit.neutral_features must list names of 'features', got {neutral!r}")
    for j, spec in enumerate(specs):
        if spec.name in neutral and any(row[j] != 0.0 for row in rows):
            raise ValueError(f"feature {spec.name!r} is neutral but has a non-zero weight")
    prov = data.get("provenance", {})
    if not isinstance(prov, dict):
        raise ValueError("'provenance' must be an object")
    return ScoringModel(
        version=version,
        features=tuple(specs),
        weights=tuple(rows),
        intercepts=icpt,
        thresholds=t,
        l2=l2,
        balance_classes=bool(fit_cfg.get("balance_classes", True)),
        neutral=tuple(neutral),
        provenance=frozen_json(prov),
    )


@functools.cache
def packaged_model() -> ScoringModel:
    """The packaged default model, read once. Raises ValueError if the package is broken."""
    return ScoringModel.load()


def score(evidence: ShotEvidence) -> Score:
    """Score with the packaged default model (a plain function, for the engine and benches)."""
    return packaged_model().score(evidence)
