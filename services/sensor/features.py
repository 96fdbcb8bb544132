"""The five acoustic features of one impulse, exactly as the wire format defines them (pure).

Every feature is measured on a short stretch of audio around the onset the detector found,
and each definition below is the one in ``shared/schemas.py`` and docs/sensor.md. "High-
passed" means the detector's own one-pole high-pass (``DetectorConfig.highpass_hz``); the
"first peak" is the detector's: the first excursion of the high-passed signal after the
onset that reaches half of the largest one within ``lookahead_ms``.

* ``peak_db`` — the largest |sample| of the raw audio from the onset to
  :data:`PEAK_WINDOW_MS` after it, in dB SPL: ``full_scale_db_spl + 20·log10(peak / full
  scale)``. ``full_scale_db_spl`` is the sensor's calibration (the SPL of a full-scale
  sample). A clipped impulse reads at full scale: the value is then a lower bound.
* ``snr_db`` — ``20·log10(high-passed peak / background RMS)`` over the same window; the
  background is the detector's floor tracker at the onset (the high-passed RMS of the
  preceding ambient sound, loud events excluded).
* ``rise_time_ms`` — 10 % → 90 % rise of the first peak's magnitude on the high-passed
  signal, each crossing interpolated between samples. At 12 kHz a shock front rises within
  a sample or two, so real gunfire reads 0.03–0.3 ms.
* ``duration_ms`` — the length of the first pulse (the N-wave of a muzzle blast): from the
  onset to the second zero crossing of the high-passed signal after the first peak, i.e.
  the end of the pulse's opposite-polarity phase. It is **not** the length of the energy
  envelope (reflections and reverberation in a street last tens to hundreds of ms).
* ``spectral_centroid_hz`` — ``Σ f·|X(f)|² / Σ |X(f)|²`` of the raw audio from 1 ms before
  the onset to 9 ms after it (10 ms), mean removed and Hann-weighted, over 0 … Nyquist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

PEAK_WINDOW_MS = 5.0
CENTROID_BEFORE_MS = 1.0
CENTROID_AFTER_MS = 9.0
#: The audio a feature needs after the onset (the longest window above, plus slack).
NEEDED_AFTER_MS = 15.0
#: ... and before it (the rise search and the centroid window).
NEEDED_BEFORE_MS = 12.0
_FLOOR = 1e-9


@dataclass(frozen=True)
class Features:
    peak_db: float
    snr_db: float
    rise_time_ms: float
    duration_ms: float
    spectral_centroid_hz: float
    clipped: bool

    def wire(self) -> dict[str, float]:
        """The five fields of ``shared.schemas.AcousticFeatures``, rounded for the wire."""
        return {
            "peak_db": round(self.peak_db, 2),
            "snr_db": round(self.snr_db, 2),
            "rise_time_ms": round(self.rise_time_ms, 4),
            "duration_ms": round(self.duration_ms, 3),
            "spectral_centroid_hz": round(self.spectral_centroid_hz, 1),
        }


def _crossing_before(mag: NDArray, peak: int, level: float, floor_index: int) -> float:
    """Sub-sample position where ``mag`` last rises through ``level`` before ``peak``."""
    k = peak
    while k > floor_index and mag[k - 1] >= level:
        k -= 1
    if k <= floor_index:
        return float(floor_index)
    a1, a2 = mag[k - 1], mag[k]
    return (k - 1) + (level - a1) / (a2 - a1) if a2 > a1 else float(k)


def _zero_crossings_after(hp: NDArray, start: int, count: int, stop: int) -> float | None:
    """Sub-sample position of the ``count``-th sign change of ``hp`` after ``start``."""
    sign = hp[start] >= 0
    seen = 0
    for k in range(start + 1, stop):
        s = hp[k] >= 0
        if s != sign:
            seen += 1
            sign = s
            if seen == count:
                a1, a2 = hp[k - 1], hp[k]
                return (k - 1) + a1 / (a1 - a2) if a1 != a2 else float(k)
    return None


def compute(
    raw: NDArray,
    hp: NDArray,
    onset: float,
    peak_index: int,
    background_rms: float,
    *,
    sample_rate: int,
    full_scale: float,
    full_scale_db_spl: float,
) -> Features:
    """Features of the impulse at ``onset`` (sub-sample index into ``raw``/``hp``, which are
    the raw and high-passed audio of the same stretch; ``peak_index`` is the first peak).
    ``raw`` must hold :data:`NEEDED_BEFORE_MS` before and :data:`NEEDED_AFTER_MS` after the
    onset (a ``ValueError`` otherwise)."""
    ms = sample_rate / 1000.0
    i0 = math.floor(onset)
    before = math.ceil(NEEDED_BEFORE_MS * ms)
    after = math.ceil(NEEDED_AFTER_MS * ms)
    if i0 - before < 0 or i0 + after > raw.shape[0] or raw.shape != hp.shape:
        raise ValueError("the audio around the onset is too short for its features")
    w_end = i0 + round(PEAK_WINDOW_MS * ms) + 1
    seg = np.abs(raw[max(i0, 0) : w_end])
    peak = float(seg.max())
    clipped = peak >= full_scale * 0.999
    peak_db = full_scale_db_spl + 20.0 * math.log10(max(peak, 1.0) / full_scale)
    hp_peak = float(np.abs(hp[i0:w_end]).max())
    snr_db = 20.0 * math.log10(max(hp_peak, _FLOOR) / max(background_rms, _FLOOR))

    mag = np.abs(hp)
    first = float(mag[peak_index])
    floor_index = i0 - round(1.0 * ms)
    t10 = _crossing_before(mag, peak_index, 0.1 * first, floor_index)
    t90 = _crossing_before(mag, peak_index, 0.9 * first, floor_index)
    rise_ms = max(t90 - t10, 0.0) / ms

    end = _zero_crossings_after(hp, peak_index, 2, i0 + after)
    duration_ms = ((end if end is not None else i0 + after) - onset) / ms

    c0 = i0 - round(CENTROID_BEFORE_MS * ms)
    c1 = i0 + round(CENTROID_AFTER_MS * ms)
    frame = raw[c0:c1].astype(np.float64)
    frame = (frame - frame.mean()) * np.hanning(frame.size)
    power = np.abs(np.fft.rfft(frame)) ** 2
    freqs = np.fft.rfftfreq(frame.size, 1.0 / sample_rate)
    total = float(power.sum())
    centroid = float((freqs * power).sum() / total) if total > 0 else 0.0
    return Features(peak_db, snr_db, rise_ms, max(duration_ms, 0.0), centroid, clipped)
