"""What a simulated sensor hears: audio rendered from the simulator's pulses (pure).

``shotline run --demo`` feeds this audio to the real sensor program, so the demo is the
whole chain from sound to CAD. Each pulse the simulator says a sensor heard becomes a muzzle
blast as a 12 kHz street sensor records it: an N-wave (0.2 ms rise, 1.7 ms long, the shape
measured on the kit's real clips, docs/sensor.md) at its arrival time to a fraction of a
sample, at the level the simulator gives (``peak_db``, by the sensor's calibration), with a
decaying reverberation tail, over street noise at the sensor's noise floor; loud pulses clip
at full scale as real ones do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FULL_SCALE = 32_767.0


@dataclass(frozen=True)
class HeardPulse:
    at_s: float  # seconds after the rendered stream's first sample
    peak_db: float  # dB SPL at the sensor


def _n_wave(t_ms: NDArray, amp: float, rise_ms: float = 0.2, half_ms: float = 0.75) -> NDArray:
    up = np.clip(t_ms / rise_ms, 0.0, 1.0) * amp
    fall = amp * (1.0 - (t_ms - rise_ms) / half_ms)
    back = -amp * np.clip(1.0 - (t_ms - rise_ms - 2 * half_ms) / 0.3, 0.0, 1.0)
    wave = np.where(t_ms < rise_ms, up, np.where(t_ms <= rise_ms + 2 * half_ms, fall, back))
    return np.where(t_ms < 0, 0.0, wave)


def render(
    pulses: Sequence[HeardPulse],
    seconds: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = 12_000,
    noise_db: float = 62.0,
    full_scale_db_spl: float = 93.5,
) -> NDArray:
    """``seconds`` of 16-bit-range audio (float) holding ``pulses`` over street noise."""
    n = round(seconds * sample_rate)
    to_amp = lambda db: FULL_SCALE * 10 ** ((db - full_scale_db_spl) / 20)  # noqa: E731
    x = rng.normal(0.0, to_amp(noise_db), n)
    span = int(0.25 * sample_rate)
    for p in pulses:
        first = int(np.floor(p.at_s * sample_rate)) - 2
        if first >= n or first + span <= 0:
            continue
        lo, hi = max(first, 0), min(first + span, n)
        t_ms = (np.arange(lo, hi) / sample_rate - p.at_s) * 1000.0
        amp = to_amp(p.peak_db)
        tail = rng.normal(0.0, 1.0, hi - lo) * amp * 0.15 * np.exp(-np.maximum(t_ms - 2, 0) / 40)
        x[lo:hi] += _n_wave(t_ms, amp) + np.where(t_ms > 2.0, tail, 0.0)
    return np.clip(x, -FULL_SCALE, FULL_SCALE)
