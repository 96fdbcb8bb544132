"""Where the sensor's audio comes from: files (WAV/FLAC) for replay, or a live sound card.

A file needs the instant of its first sample: given on the command line, or read from a
sidecar JSON beside it (the kit's format: ``timestamp`` in UTC, ``serial_number``,
``location``). A live device is read through PortAudio (``sounddevice``); its clock is the
system clock, which on a real sensor is disciplined by GPS/PPS (README, "Sensor clock").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


class SourceError(Exception):
    """A problem with the audio input, said in one line that names it."""


@dataclass(frozen=True)
class Sidecar:
    sensor_id: str
    start: datetime
    xyz: tuple[float, float, float]


def read_sidecar(path: Path) -> Sidecar:
    try:
        data = json.loads(Path(path).read_text())
        start = datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00"))
        loc = data.get("location") or {}
        xyz = (float(loc.get("x", 0.0)), float(loc.get("y", 0.0)), float(loc.get("z", 0.0)))
        sensor = str(data.get("serial_number", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"sidecar {path}: {type(exc).__name__}: {exc}") from None
    if start.tzinfo is None:
        raise SourceError(f"sidecar {path}: timestamp must carry a UTC offset")
    return Sidecar(sensor, start.astimezone(UTC), xyz)


@dataclass(frozen=True)
class AudioFile:
    path: Path
    start: datetime
    sample_rate: int
    frames: int

    def blocks(self, block: int) -> Iterator[np.ndarray]:
        """The file's first channel in blocks of ``block`` samples (int16 → float)."""
        import soundfile

        with soundfile.SoundFile(str(self.path)) as f:
            while True:
                data = f.read(block, dtype="int16", always_2d=True)
                if data.shape[0] == 0:
                    return
                yield data[:, 0].astype(np.float64)


def open_file(path: Path, start: datetime | None) -> AudioFile:
    """A WAV or FLAC file with the instant of its first sample (``start``, else the sidecar
    ``<name>.json`` beside it). Raises :class:`SourceError` naming the problem."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"audio file {path}: no such file")
    try:
        info = soundfile.info(str(path))
    except RuntimeError as exc:
        raise SourceError(f"audio file {path}: not a readable WAV/FLAC ({exc})") from None
    if start is None:
        side = path.with_suffix(".json")
        if not side.is_file():
            raise SourceError(
                f"audio file {path}: no start time: pass --start (RFC 3339 UTC) "
                f"or put a sidecar {side.name} beside it"
            )
        start = read_sidecar(side).start
    if start.tzinfo is None:
        raise SourceError("--start must carry a UTC offset, e.g. 2018-12-19T00:49:26Z")
    return AudioFile(path, start.astimezone(UTC), int(info.samplerate), int(info.frames))


def device_unavailable_reason(name: str | None) -> str | None:
    """None if PortAudio can open an input device named ``name`` (or the default one), else
    one line saying why not."""
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        return f"no audio device: PortAudio is not available ({exc})"
    try:
        devices = sounddevice.query_devices()
        inputs = [d for d in devices if d.get("max_input_channels", 0) > 0]
        if not inputs:
            return "no audio device: this machine has no sound input device"
        if name is not None:
            sounddevice.query_devices(name, "input")
    except (ValueError, sounddevice.PortAudioError) as exc:
        return f"no audio device {name!r}: {exc}"
    return None
