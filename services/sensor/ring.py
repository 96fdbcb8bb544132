"""A rolling buffer of the last few seconds of audio, in memory only (pure).

The sensor never stores or sends continuous audio: it keeps at most ``seconds`` of the
stream here, to measure features around an onset and to cut the short clip of a detection.
Older samples are overwritten.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class AudioRing:
    """The last ``capacity`` samples of a stream (and of a companion signal, e.g. the
    detector's high-passed audio), addressed by stream sample index."""

    def __init__(self, sample_rate: int, seconds: float) -> None:
        if not 0 < seconds <= 10:
            raise ValueError("the audio ring holds more than 0 and at most 10 s")
        self.capacity = round(sample_rate * seconds)
        self._raw = np.zeros(self.capacity)
        self._hp = np.zeros(self.capacity)
        self.end = 0  # stream index one past the newest sample

    @property
    def start(self) -> int:
        """Stream index of the oldest sample still held."""
        return max(0, self.end - self.capacity)

    def append(self, raw: NDArray, hp: NDArray) -> None:
        n = raw.shape[0]
        if n >= self.capacity:
            raw, hp = raw[-self.capacity :], hp[-self.capacity :]
            self.end += n - self.capacity
            n = self.capacity
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        self._raw[pos : pos + first] = raw[:first]
        self._hp[pos : pos + first] = hp[:first]
        self._raw[: n - first] = raw[first:]
        self._hp[: n - first] = hp[first:]
        self.end += n

    def window(self, lo: int, hi: int) -> tuple[NDArray, NDArray]:
        """Copies of samples ``lo`` … ``hi - 1`` (stream indices); ``ValueError`` if they are
        not (any longer, or yet) held."""
        if lo < self.start or hi > self.end or lo >= hi:
            raise ValueError(f"samples {lo}..{hi} are not in the ring ({self.start}..{self.end})")
        idx = np.arange(lo, hi) % self.capacity
        return self._raw[idx].copy(), self._hp[idx].copy()
