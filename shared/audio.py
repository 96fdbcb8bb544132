"""A detection's audio clip: what is cut, what is refused, how it is encoded (pure, shared by
the sensor, which withholds a speech-like clip, and ingest, which refuses to keep one).

A clip is the impulse with at most 1 s either side, cut from the in-memory ring; nothing
else of the stream is ever kept or sent. Before a clip is kept, a **voice-band loudness
check** refuses it if it is mostly speech-like sound: the clip is cut into 32 ms frames;
a frame is *voice-like* when at least ``voice_band_share`` of its energy lies in the
telephone voice band (300–3,400 Hz), it is at least ``loud_db`` above the clip's quiet
floor (its 10th-percentile frame), and it is voiced: periodic at a voice's pitch (its
normalised autocorrelation at a lag of 2.5–12.5 ms reaches ``voicing``). The impulse
itself (from one frame before the onset to ``impulse_ms`` after it) is not counted. If
voice-like frames make up more than ``max_voice_share`` of the rest, the clip is withheld
(the detection is still sent).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

VOICE_BAND_HZ = (300.0, 3400.0)
#: A speaking voice's pitch range (fundamental frequency), Hz.
PITCH_HZ = (80.0, 400.0)
FRAME_MS = 32.0


@dataclass(frozen=True)
class ClipPolicy:
    enabled: bool = True
    voice_band_share: float = 0.7
    loud_db: float = 10.0
    max_voice_share: float = 0.3
    impulse_ms: float = 150.0
    voicing: float = 0.6

    def voice_share(
        self, samples: NDArray, sample_rate: int, onset_index: int | None = None
    ) -> float:
        return speech_like_share(samples, sample_rate, onset_index, self)

    def keeps(self, samples: NDArray, sample_rate: int, onset_index: int | None = None) -> bool:
        """Whether a clip may be kept and uploaded (False: withheld)."""
        if not self.enabled:
            return True
        return self.voice_share(samples, sample_rate, onset_index) <= self.max_voice_share


def speech_like_share(
    samples: NDArray, sample_rate: int, onset_index: int | None, policy: ClipPolicy
) -> float:
    """Share of the clip's frames (the impulse excluded) that are loud and voice-band."""
    x = np.asarray(samples, dtype=np.float64)
    n = int(sample_rate * FRAME_MS / 1000)
    frames = x[: (x.size // n) * n].reshape(-1, n)
    if frames.shape[0] == 0:
        return 0.0
    keep = np.ones(frames.shape[0], dtype=bool)
    if onset_index is not None:
        first = max(0, (onset_index - n) // n)
        last = (onset_index + int(policy.impulse_ms * sample_rate / 1000)) // n
        keep[first : last + 1] = False
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = (freqs >= VOICE_BAND_HZ[0]) & (freqs <= VOICE_BAND_HZ[1])
    total = spectrum.sum(axis=1) + 1e-12
    share = spectrum[:, band].sum(axis=1) / total
    level = 10 * np.log10(total)
    floor = np.percentile(level, 10)
    voiced = _voicing(frames, sample_rate) >= policy.voicing
    voice = (share >= policy.voice_band_share) & (level >= floor + policy.loud_db) & voiced
    counted = keep.sum()
    return float(voice[keep].sum() / counted) if counted else 0.0


def _voicing(frames: NDArray, sample_rate: int) -> NDArray:
    """Per frame, the largest normalised autocorrelation at a voice's pitch period
    (:data:`PITCH_HZ`): near 1 for voiced speech, low for a bang, its echoes or traffic."""
    lo = int(sample_rate / PITCH_HZ[1])
    hi = min(int(sample_rate / PITCH_HZ[0]), frames.shape[1] - 8)
    spec = np.fft.rfft(frames, n=2 * frames.shape[1], axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : frames.shape[1]]
    zero = ac[:, :1] + 1e-12
    # unbiased: a lag of k sees n - k sample pairs
    n = frames.shape[1]
    norm = ac[:, lo:hi] / zero * (n / (n - np.arange(lo, hi)))
    return norm.max(axis=1)


def encode_wav(samples: NDArray, sample_rate: int, full_scale: float = 32_767.0) -> bytes:
    """16-bit mono PCM WAV of the clip (what is uploaded and what a dispatcher plays)."""
    pcm = np.clip(np.round(np.asarray(samples) * (32_767.0 / full_scale)), -32_768, 32_767)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()
