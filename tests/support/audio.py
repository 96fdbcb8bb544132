"""Synthetic sensor audio for tests: N-wave impulses with known onsets in noise."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np

from shared.schemas import format_time

SR = 12_000


def n_wave(t0_samples: float, n: int, *, amp: float = 20_000.0, rise_ms: float = 0.25,
           half_ms: float = 0.9) -> np.ndarray:
    """An N-wave whose front starts at ``t0_samples``: a linear rise to ``amp`` over
    ``rise_ms``, a linear fall through zero to ``-amp`` at ``2·half_ms``, then back to 0."""
    t = (np.arange(n) - t0_samples) / SR * 1000.0
    rise = np.clip(t / rise_ms, 0, 1)
    body = np.where(t < rise_ms, rise * amp, amp * (1 - (t - rise_ms) / half_ms))
    late = t > rise_ms + 2 * half_ms
    body = np.where(late, -amp * np.clip(1 - (t - rise_ms - 2 * half_ms) / 0.3, 0, 1), body)
    return np.where(t < 0, 0.0, body)


def impulses(onsets: list[float], seconds: float, *, noise_rms: float = 200.0,
             seed: int = 0, amp: float = 20_000.0) -> np.ndarray:
    n = int(seconds * SR)
    x = np.random.default_rng(seed).normal(0, noise_rms, n)
    for t0 in onsets:
        x += n_wave(t0, n, amp=amp)
    return x


def write_clip(path: Path, samples: np.ndarray, start: datetime, sensor_id: str = "") -> Path:
    """A 16-bit WAV (or FLAC, by suffix) plus the kit-style sidecar JSON beside it."""
    import soundfile

    soundfile.write(str(path), np.clip(samples, -32_767, 32_767).astype(np.int16), SR,
                    subtype="PCM_16")
    path.with_suffix(".json").write_text(
        json.dumps({"serial_number": sensor_id, "timestamp": format_time(start),
                    "location": {"x": 0, "y": 0, "z": 0}})
    )
    return path


def speech(seconds: float = 2.0) -> np.ndarray:
    """Voiced sound: harmonics of 120 Hz shaped by two formants, syllables at 4 Hz."""
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 120 * k * t) / (1 + abs(120 * k - f) / 200)
                for k in range(1, 28) for f in (700, 1200))
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return 3000 * voice * syllables + np.random.default_rng(1).normal(0, 30, t.size)


def speech_clip(seconds: float = 2.0) -> bytes:
    from shared.audio import encode_wav

    return encode_wav(speech(seconds), SR)


