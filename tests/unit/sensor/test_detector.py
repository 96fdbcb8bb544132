"""The streaming impulse detector: onsets to a fraction of a sample, causal, padding-proof."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.sensor.detector import DetectorConfig, ImpulseDetector, detect
from tests.support.audio import n_wave

SR = 12_000


def noisy(n: int, rms: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, rms, n)


@pytest.mark.parametrize("seed", range(8))
def test_onset_is_found_to_a_fraction_of_a_sample(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    t0 = 6000 + rng.uniform(0, 1)  # a fractional onset half a second in
    x = noisy(12_000, 200.0, seed) + n_wave(t0, 12_000)  # ~40 dB over the noise
    onsets = detect(x)
    assert len(onsets) == 1
    assert abs(onsets[0].sample - t0) < 0.25  # samples: 21 µs at 12 kHz


def test_onsets_do_not_depend_on_how_the_stream_is_cut() -> None:
    x = noisy(36_000, 150.0, 1)
    for t0 in (5000.3, 14_000.7, 26_000.1):
        x += n_wave(t0, x.size, amp=8000.0)
    whole = [o.sample for o in detect(x)]
    det = ImpulseDetector()
    cuts = [0, 7, 4999, 5003, 5010, 13_000, 20_000, 36_000]
    streamed = [o.sample for a, b in itertools.pairwise(cuts) for o in det.process(x[a:b])]
    assert len(whole) == 3
    assert streamed == pytest.approx(whole, abs=1e-9)


def test_causal_an_onset_is_decided_from_the_past_only() -> None:
    """Whatever follows the decision point cannot change an onset already reported."""
    x = noisy(12_000, 150.0, 2) + n_wave(6000.4, 12_000)
    cfg = DetectorConfig()
    decided_by = 6000 + cfg.samples(cfg.sta_ms) + cfg.samples(cfg.lookahead_ms) + 2
    first = ImpulseDetector(cfg).process(x[:decided_by])
    y = x.copy()
    y[decided_by:] = noisy(y.size - decided_by, 5000.0, 3)  # a different future
    second = ImpulseDetector(cfg).process(y)
    assert len(first) == 1
    assert second[0].sample == first[0].sample


def test_padding_is_skipped_and_its_end_is_not_an_onset() -> None:
    """Digital silence (exact zeros) then sound: no onset at the jump, nor inside."""
    x = noisy(36_000, 400.0, 4)
    x[:12_000] = 0.0  # the first second is padding, as in the kit's clips
    x[30_000:] = 0.0  # and the end
    x += n_wave(20_000.5, x.size) * (x != 0)
    onsets = detect(x)
    assert [round(o.sample) for o in onsets] == [20_000]


def test_a_short_run_of_zeros_is_quiet_not_padding() -> None:
    x = noisy(24_000, 300.0, 5)
    x[8000:8004] = 0.0  # mu-law zero level a few samples long: real audio
    x += n_wave(8100.2, x.size)
    onsets = detect(x)
    assert len(onsets) == 1 and abs(onsets[0].sample - 8100.2) < 0.3


@pytest.mark.parametrize(("amp", "tolerance"), [(60_000.0, 0.35), (120_000.0, 1.0)])
def test_a_clipped_impulse_keeps_its_onset(amp: float, tolerance: float) -> None:
    """Loud direct sound clips at full scale: the edge below full scale gives the onset. At
    twice full scale the edge is still resolved; at four times it clips within one sample,
    and the onset is known to that sample."""
    for t0 in (9000.1, 9000.6):
        x = noisy(24_000, 300.0, 6) + n_wave(t0, 24_000, amp=amp)
        onsets = detect(np.clip(x, -32_124, 32_124))
        assert len(onsets) == 1
        assert abs(onsets[0].sample - t0) < tolerance


def test_reverberation_after_an_impulse_is_not_a_second_onset() -> None:
    x = noisy(24_000, 200.0, 7)
    x += n_wave(6000.0, x.size)
    tail = np.random.default_rng(8).normal(0, 1, 1200) * 4000 * np.exp(-np.arange(1200) / 400)
    x[6030:7230] += tail  # 100 ms of decaying street reverberation
    assert len(detect(x)) == 1


def test_steady_noise_alone_gives_no_onset() -> None:
    assert detect(noisy(120_000, 500.0, 9)) == []


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValueError, match="edge"):
        DetectorConfig(edge_low=0.8, edge_high=0.5)
    with pytest.raises(ValueError, match="highpass_hz"):
        DetectorConfig(highpass_hz=7000.0)
