"""The Pittsburgh 2018 clips of the kit, with the pulses the vendor's sensors reported.

Used by ``bench/sensor.py`` and the tests that run the detector on real audio. Each clip's
sidecar JSON gives its sensor and its ``timestamp`` (whole seconds, UTC): sample *i* was
recorded at ``timestamp + i / 12000 s``. Exact zeros are padding (see the kit's README).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import soundfile

from services.sensor.sources import read_sidecar


@dataclass(frozen=True)
class VendorPulse:
    offset_s: float  # arrival_time_utc (truncated to the ms) minus the clip's start
    used: bool  # in the vendor's nlos-tuples (used for location)
    snr_db: float
    power_db: float


@dataclass(frozen=True)
class KitClip:
    position: str  # FP1..FP5
    test: str  # test_001 ...
    serial: str
    start: datetime
    xyz: tuple[float, float, float]
    sample_rate: int
    samples: np.ndarray  # int16
    pulses: tuple[VendorPulse, ...]

    def audible(self, offset_s: float, margin_s: float = 0.002) -> bool:
        """Inside the recorded audio (not padding, not outside the clip)."""
        i = int(offset_s * self.sample_rate)
        m = int(margin_s * self.sample_rate)
        if i - m < 0 or i + m >= self.samples.size:
            return False
        return bool(np.any(self.samples[i - m : i + m]))


def _time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def load_test(test_dir: Path) -> list[KitClip]:
    name = test_dir.name
    pulses = json.loads((test_dir / f"{name}.allpulses.json").read_text())
    used = {
        u for shot in json.loads((test_dir / f"{name}.nlos-tuples.json").read_text())
        for u in shot["pulse_uuids"]
    }
    clips = []
    for side in sorted(test_dir.glob(f"{name}.audio.*.json")):
        meta = read_sidecar(side)
        samples, rate = soundfile.read(side.with_suffix(".flac"), dtype="int16")
        mine = tuple(
            VendorPulse(
                (_time(p["arrival_time_utc"]) - meta.start).total_seconds(),
                p["pulse_uuid"] in used,
                float(p.get("signal_to_noise_dB") or 0.0),
                float(p.get("power_dB_SPL") or 0.0),
            )
            for p in pulses
            if p["serial_number"] == meta.sensor_id
        )
        clips.append(
            KitClip(test_dir.parent.name, name, meta.sensor_id, meta.start,
                    meta.xyz, rate, samples, mine)
        )
    return clips


def load_clips(data: Path, positions: tuple[str, ...] | None = None) -> list[KitClip]:
    out: list[KitClip] = []
    for test_dir in sorted(data.glob("FP*/test_*")):
        if positions is None or test_dir.parent.name in positions:
            out.extend(load_test(test_dir))
    return out
