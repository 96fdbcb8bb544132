"""The five features, each against a signal whose true value is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.sensor import features as feats
from services.sensor.detector import ImpulseDetector
from tests.support.audio import SR, impulses, n_wave


def measure(x: np.ndarray, full_scale_db_spl: float = 120.0) -> feats.Features:
    det = ImpulseDetector()
    onsets = det.process(x)
    assert len(onsets) == 1
    o = onsets[0]
    return feats.compute(x, det.last_highpassed, o.sample, o.peak_sample, o.background_rms,
                         sample_rate=SR, full_scale=32_767.0, full_scale_db_spl=full_scale_db_spl)


def test_peak_db_is_the_calibrated_level_of_the_largest_sample() -> None:
    x = impulses([6000.0], 1.0, noise_rms=50.0, amp=16_384.0)  # peak on a sample
    f = measure(x, full_scale_db_spl=120.0)
    # half of full scale = -6.02 dB (noise adds a few counts at most)
    assert f.peak_db == pytest.approx(120.0 + 20 * math.log10(16_384 / 32_767), abs=0.1)
    assert not f.clipped


def test_a_clipped_impulse_reads_full_scale_and_says_so() -> None:
    x = np.clip(impulses([6000.3], 1.0, amp=90_000.0), -32_767, 32_767)
    f = measure(x, full_scale_db_spl=93.5)
    assert f.peak_db == pytest.approx(93.5, abs=0.01)
    assert f.clipped


@pytest.mark.parametrize("rise_ms", [0.25, 0.5, 1.0])
def test_rise_time_is_the_10_to_90_percent_rise(rise_ms: float) -> None:
    n = 12_000
    x = np.random.default_rng(1).normal(0, 30.0, n) + n_wave(6000.4, n, rise_ms=rise_ms)
    f = measure(x)
    # a linear ramp rises 10 -> 90 % in 0.8 of its length; the high-pass bends it slightly
    assert f.rise_time_ms == pytest.approx(0.8 * rise_ms, rel=0.15, abs=0.03)


@pytest.mark.parametrize("half_ms", [0.6, 0.9, 1.5])
def test_duration_is_the_n_wave_not_the_reverberation(half_ms: float) -> None:
    n = 12_000
    x = np.random.default_rng(2).normal(0, 30.0, n) + n_wave(6000.0, n, half_ms=half_ms)
    # 80 ms of loud decaying reverberation after the pulse: not part of the duration
    tail = np.random.default_rng(3).normal(0, 1, 960) * 3000 * np.exp(-np.arange(960) / 300)
    start = 6000 + int((0.25 + 2 * half_ms + 0.3) * SR / 1000) + 24
    x[start : start + 960] += tail
    f = measure(x)
    true_ms = 0.25 + 2 * half_ms + 0.3  # rise, two phases, return to zero
    assert f.duration_ms == pytest.approx(true_ms, rel=0.2)


@pytest.mark.parametrize("freq", [500.0, 1500.0, 3000.0])
def test_spectral_centroid_of_a_tone_burst_is_its_frequency(freq: float) -> None:
    n = 12_000
    t = np.arange(n) / SR
    burst = np.where((t >= 0.5) & (t < 0.52), 15_000 * np.sin(2 * np.pi * freq * (t - 0.5)), 0.0)
    x = np.random.default_rng(4).normal(0, 20.0, n) + burst
    f = measure(x)
    assert f.spectral_centroid_hz == pytest.approx(freq, rel=0.12)


def test_snr_is_the_high_passed_peak_over_the_background() -> None:
    x = impulses([6000.0], 1.0, noise_rms=200.0, amp=20_000.0)
    f = measure(x)
    # 40 dB of peak over RMS before the high-pass; the one-pole high-pass at 300 Hz keeps
    # most of the white noise and of the pulse's front
    assert 36.0 <= f.snr_db <= 44.0


def test_too_little_audio_around_the_onset_is_an_error() -> None:
    x = np.zeros(100)
    with pytest.raises(ValueError, match="too short"):
        feats.compute(x, x, 50.0, 52, 1.0, sample_rate=SR, full_scale=1.0, full_scale_db_spl=90)
