"""The sensor's streaming impulse detector (pure, causal).

It reads audio block by block and decides from past samples only, so it runs on a live
sound card exactly as on a file. Each block may be of any length; the onsets it reports do
not depend on how the stream was cut into blocks (a test holds that).

The chain, per sample (compiled with numba, one pass, O(1) per sample):

1. **Padding.** A run of ``padding_samples`` or more exact zeros is digital silence (a
   recorder's padding, a dropped frame), not quiet: a microphone's noise floor never holds
   one level that long. Inside padding nothing is learned or detected, and after it the
   detector warms up again (``warmup_ms``) before it may trigger, so the jump from silence
   to sound is never an onset.
2. **High-pass** (one pole, ``highpass_hz``): removes wind and traffic rumble, which carry
   most of a street's energy and none of an impulse's onset.
3. **Trigger.** Short-term energy (``sta_ms``) against the long-term background
   (exponential, ``lta_s``, frozen while an impulse is pending or ringing): the detector
   triggers when the ratio exceeds ``trigger_db``, then ignores ``refractory_ms``.
4. **Onset** (decided ``lookahead_ms`` after the trigger, from samples already seen): the
   first peak of the impulse is the largest |high-passed sample| from the trigger to
   ``lookahead_ms`` after it. Walking back from that peak, the rising edge crosses
   ``edge_low`` and ``edge_high`` of the peak's magnitude (each crossing linearly
   interpolated between samples); the onset is where the straight line through those two
   crossings meets zero — the start of the front, to a fraction of a sample. A clipped peak
   only shortens the edge that is used; the part below full scale is intact.

The result is the onset's sample index in the stream (a float, counted from the stream's
first sample) and the state needed for the features (:mod:`services.sensor.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numpy.typing import NDArray


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of the detector. Defaults and where each comes from: docs/sensor.md."""

    sample_rate: int = 12_000
    highpass_hz: float = 300.0
    sta_ms: float = 1.0
    lta_s: float = 0.5
    recent_ms: float = 20.0
    fall_s: float = 0.05
    trigger_db: float = 12.0
    refractory_ms: float = 15.0
    lookahead_ms: float = 2.0
    warmup_ms: float = 100.0
    padding_samples: int = 24
    edge_low: float = 0.3
    edge_high: float = 0.7
    first_peak: float = 0.35

    def __post_init__(self) -> None:
        if self.sample_rate < 4000:
            raise ValueError("sample_rate must be at least 4000 Hz")
        if not 0 < self.highpass_hz < self.sample_rate / 2:
            raise ValueError("highpass_hz must lie between 0 and half the sample rate")
        if not 0 < self.edge_low < self.edge_high < 1:
            raise ValueError("edge fractions must satisfy 0 < edge_low < edge_high < 1")
        for name in ("sta_ms", "lta_s", "refractory_ms", "lookahead_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.padding_samples < 2:
            raise ValueError("padding_samples must be at least 2")

    def samples(self, ms: float) -> int:
        return max(1, round(ms * self.sample_rate / 1000.0))


#: How many past samples the detector keeps (for the look-back of the onset search).
HISTORY = 256

# indices into the float state vector
_S_XPREV, _S_YPREV, _S_STASUM, _S_LTA, _S_RECENT = 0, 1, 2, 3, 4
# indices into the int state vector
_I_ZRUN, _I_WARM, _I_PENDING, _I_QUIET_UNTIL, _I_POS = 0, 1, 2, 3, 4


@njit(cache=True, nogil=True)
def _run(
    raw: NDArray,
    hp: NDArray,
    start: int,
    fstate: NDArray,
    istate: NDArray,
    a_hp: float,
    sta_n: int,
    lta_alpha: float,
    mta_alpha: float,
    fall_alpha: float,
    ratio: float,
    refractory_n: int,
    look_n: int,
    warm_n: int,
    pad_n: int,
    lo: float,
    hi: float,
    first: float,
    out: NDArray,
) -> int:
    """Process ``raw[start:]`` (``raw[:start]`` is the history, already processed).

    ``hp`` receives the high-passed samples. Writes (onset, peak index) pairs to ``out``
    as positions relative to ``raw[0]``; returns how many.
    """
    n = raw.shape[0]
    base = istate[_I_POS] - start  # stream index of raw[0]
    x_prev = fstate[_S_XPREV]
    y_prev = fstate[_S_YPREV]
    sta_sum = fstate[_S_STASUM]
    lta = fstate[_S_LTA]
    recent = fstate[_S_RECENT]
    zrun = istate[_I_ZRUN]
    warm = istate[_I_WARM]
    pending = istate[_I_PENDING]  # stream index of a trigger awaiting its onset, or -1
    quiet_until = istate[_I_QUIET_UNTIL]
    found = 0
    for i in range(start, n):
        x = raw[i]
        if x == 0.0:
            zrun += 1
        else:
            zrun = 0
        y = a_hp * (y_prev + x - x_prev)
        x_prev = x
        y_prev = y
        hp[i] = y
        e = y * y
        old = hp[i - sta_n] if i - sta_n >= 0 else 0.0
        sta_sum += e - old * old
        if sta_sum < 0.0:
            sta_sum = 0.0
        stream_i = base + i
        if zrun >= pad_n:
            # padding: forget the background, drop a pending trigger, warm up afresh
            warm = 0
            lta = 0.0
            pending = -1
            sta_sum = 0.0
            recent = 0.0
            y_prev = 0.0
            continue
        if warm < warm_n:
            warm += 1
            lta += (e - lta) / warm  # plain mean while warming up
            recent = lta
            continue
        if pending >= 0:
            if stream_i - pending >= look_n:
                # decide: first peak from the trigger to look_n after it
                p = pending - base
                m = p
                best = 0.0
                lo_k = p - sta_n
                if lo_k < 1:
                    lo_k = 1
                for k in range(lo_k, i + 1):
                    v = abs(hp[k])
                    if v > best:
                        best = v
                # the first excursion reaching half of that, climbed to its own maximum
                # (not a later, larger phase of the same N-wave)
                m = lo_k
                while abs(hp[m]) < first * best:
                    m += 1
                while m < i and abs(hp[m + 1]) > abs(hp[m]):
                    m += 1
                best = abs(hp[m])
                t_lo = -1.0
                t_hi = -1.0
                k = m
                while k > 0 and m - k < 128:
                    a1 = abs(hp[k - 1])
                    a2 = abs(hp[k])
                    if t_hi < 0.0 and a1 < hi * best <= a2:
                        t_hi = (k - 1) + (hi * best - a1) / (a2 - a1)
                    if a1 < lo * best <= a2:
                        t_lo = (k - 1) + (lo * best - a1) / (a2 - a1)
                        break
                    k -= 1
                if t_lo >= 0.0:
                    if t_hi < 0.0 or t_hi <= t_lo:
                        onset = t_lo
                    else:
                        onset = t_lo - (t_hi - t_lo) * lo / (hi - lo)
                    if onset < t_lo - 4.0:  # a bent edge: never more than 4 samples back
                        onset = t_lo - 4.0
                    out[found, 0] = onset
                    out[found, 1] = m
                    out[found, 2] = math.sqrt(lta) if lta > 0.0 else 0.0
                    found += 1
                pending = -1
                quiet_until = stream_i + refractory_n
            continue  # background frozen while an impulse is pending
        # the recent reference: energy of the last mta samples before the short window
        recent += mta_alpha * (old * old - recent)
        level = sta_sum / sta_n
        # the background follows falls within fall_s, rises only within lta_s: a floor
        # tracker, so a loud sound a moment ago does not deafen the detector to the next
        step = fall_alpha if level < lta else lta_alpha
        if stream_i < quiet_until:
            lta += step * (level - lta)
            continue  # ringing: learn from it, but do not trigger on it
        ref = lta if lta > recent else recent
        if sta_sum > ratio * ref * sta_n and sta_sum > 0.0:
            pending = stream_i
            continue
        lta += step * (level - lta)
    fstate[_S_XPREV] = x_prev
    fstate[_S_YPREV] = y_prev
    fstate[_S_STASUM] = sta_sum
    fstate[_S_LTA] = lta
    fstate[_S_RECENT] = recent
    istate[_I_ZRUN] = zrun
    istate[_I_WARM] = warm
    istate[_I_PENDING] = pending
    istate[_I_QUIET_UNTIL] = quiet_until
    istate[_I_POS] = base + n
    return found


@dataclass(frozen=True)
class Onset:
    """One detected impulse: where it starts, where its first peak is (stream samples)."""

    sample: float  # sub-sample onset, counted from the stream's first sample
    peak_sample: int  # the first peak (see the module docstring)
    background_rms: float  # the high-passed background at the decision, sample units


@dataclass
class ImpulseDetector:
    """Streaming detector: feed blocks with :meth:`process`, get the onsets they complete."""

    config: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        c = self.config
        self._a_hp = 1.0 / (1.0 + 2.0 * math.pi * c.highpass_hz / c.sample_rate)
        self._sta_n = c.samples(c.sta_ms)
        self._lta_alpha = 1.0 / (c.lta_s * c.sample_rate)
        self._mta_alpha = 1.0 / max(1.0, c.recent_ms * c.sample_rate / 1000.0)
        self._fall_alpha = 1.0 / (c.fall_s * c.sample_rate)
        self._ratio = 10.0 ** (c.trigger_db / 10.0)
        self._refractory_n = c.samples(c.refractory_ms)
        self._look_n = c.samples(c.lookahead_ms)
        self._warm_n = c.samples(c.warmup_ms)
        self._fstate = np.zeros(5)
        self._istate = np.zeros(5, dtype=np.int64)
        self._istate[_I_PENDING] = -1
        self._raw_tail = np.zeros(0)
        self._hp_tail = np.zeros(0)
        #: The high-passed samples of the last block (what the features are measured on).
        self.last_highpassed: NDArray = np.zeros(0)

    @property
    def samples_seen(self) -> int:
        return int(self._istate[_I_POS])

    @property
    def background_rms(self) -> float:
        """RMS of the high-passed background the trigger compares against (sample units)."""
        return math.sqrt(max(self._fstate[_S_LTA], 0.0))

    def process(self, block: NDArray) -> list[Onset]:
        """Consume one block of samples (any length, any numeric dtype); return the onsets
        decided while reading it, in stream order."""
        block = np.asarray(block, dtype=np.float64).ravel()
        if block.size == 0:
            return []
        start = self._raw_tail.size
        raw = np.concatenate((self._raw_tail, block))
        hp = np.concatenate((self._hp_tail, np.zeros(block.size)))
        out = np.empty((block.size // self._refractory_n + 2, 3))
        base = self.samples_seen - start
        found = _run(
            raw, hp, start, self._fstate, self._istate, self._a_hp, self._sta_n,
            self._lta_alpha, self._mta_alpha,
            self._fall_alpha, self._ratio, self._refractory_n, self._look_n, self._warm_n,
            self.config.padding_samples, self.config.edge_low, self.config.edge_high,
            self.config.first_peak, out,
        )
        self._raw_tail = raw[-HISTORY:].copy()
        self._hp_tail = hp[-HISTORY:].copy()
        self.last_highpassed = hp[start:]
        return [
            Onset(base + float(out[j, 0]), base + int(out[j, 1]), float(out[j, 2]))
            for j in range(found)
        ]


def detect(samples: NDArray, config: DetectorConfig | None = None) -> list[Onset]:
    """All onsets of a whole recording (the streaming detector fed in one block)."""
    return ImpulseDetector(config or DetectorConfig()).process(samples)
