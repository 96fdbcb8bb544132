"""``shotline sensor``: run the sensor on files or a live device (signals only here)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from services.sensor.queue import DetectionQueue
from services.sensor.service import ANCHORS_KEPT, AudioStream, Counts, SensorService
from services.sensor.settings import SensorSettings
from services.sensor.sources import AudioFile, SourceError, device_unavailable_reason
from services.sensor.uplink import Uplink
from shared.audio import ClipPolicy

KIT_FULL_SCALE = 32_124.0


@dataclass(frozen=True)
class RunSummary:
    files: int
    seconds: float
    onsets: int
    accepted: int
    duplicate: int
    rejected: int
    left_queued: int
    clips_sent: int
    clips_withheld: int


async def _file_blocks(audio: AudioFile, block: int) -> AsyncIterator[np.ndarray]:
    for chunk in audio.blocks(block):
        yield chunk


def file_stream(audio: AudioFile, block_ms: float) -> AudioStream:
    block = max(1, int(audio.sample_rate * block_ms / 1000))
    # 16-bit files; the kit's mu-law clips top out at 32,124 (what "full scale" means there)
    return AudioStream(audio.start, audio.sample_rate, _file_blocks(audio, block))


async def replay_files(
    settings: SensorSettings,
    *,
    sensor_id: str,
    token: str,
    ingest_url: str,
    files: list[AudioFile],
    clip_policy: ClipPolicy | None = None,
    on_progress: Callable[[int, Counts], None] | None = None,
) -> RunSummary:
    """Replay files one after another through one queue and one uplink."""
    queue = DetectionQueue(settings.queue_path, settings.queue_capacity)
    totals = Counts()
    try:
        async with httpx.AsyncClient(timeout=settings.request_timeout_s) as client:
            uplink = Uplink(ingest_url, token, client)
            for index, audio in enumerate(files):
                service = SensorService(
                    settings, sensor_id=sensor_id, uplink=uplink,
                    stream=file_stream(audio, settings.block_ms), queue=queue,
                    clip_policy=clip_policy,
                    on_progress=(lambda c, i=index: on_progress(i, c)) if on_progress else None,
                )
                await service.start()
                try:
                    await service.wait()
                finally:
                    service.abort()
                for name in ("samples", "onsets", "accepted", "duplicate", "rejected",
                             "clips_sent", "clips_withheld"):
                    setattr(totals, name, getattr(totals, name) + getattr(service.counts, name))
        left = len(queue)
    finally:
        queue.close()
    seconds = sum(a.frames / a.sample_rate for a in files)
    return RunSummary(len(files), seconds, totals.onsets, totals.accepted, totals.duplicate,
                      totals.rejected, left, totals.clips_sent, totals.clips_withheld)


async def run_device(
    settings: SensorSettings,
    *,
    sensor_id: str,
    token: str,
    ingest_url: str,
    device: str | None,
    sample_rate: int,
    clip_policy: ClipPolicy | None = None,
    stop: asyncio.Event | None = None,
) -> Counts:
    """Listen on a live input device until SIGTERM/SIGINT (or ``stop`` is set)."""
    reason = device_unavailable_reason(device)
    if reason is not None:
        raise SourceError(reason)
    import sounddevice

    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=100)  # ~10 s: bounded
    anchors: deque[tuple[int, datetime]] = deque(maxlen=ANCHORS_KEPT)
    seen = [0]
    block = int(sample_rate * settings.block_ms / 1000)

    def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread
        # the instant of this block's first sample on the (GPS-disciplined) system clock:
        # now, minus how long ago the ADC took it
        lag = max(0.0, time_info.currentTime - time_info.inputBufferAdcTime)
        when = datetime.now(UTC) - timedelta(seconds=lag)
        loop.call_soon_threadsafe(anchors.append, (seen[0], when))
        seen[0] += frames
        data = indata[:, 0].astype(np.float64) * 32_767.0
        with contextlib.suppress(asyncio.QueueFull):
            loop.call_soon_threadsafe(blocks.put_nowait, data)

    async def _blocks() -> AsyncIterator[np.ndarray]:
        while True:
            yield await blocks.get()

    stream_in = sounddevice.InputStream(
        device=device, channels=1, samplerate=sample_rate, blocksize=block, dtype="float32",
        callback=callback,
    )
    stream_in.start()
    try:
        first = await blocks.get()
        stream = AudioStream(anchors[0][1], sample_rate, _prepend(first, _blocks()),
                             anchors=anchors)
        queue = DetectionQueue(settings.queue_path, settings.queue_capacity)
        async with httpx.AsyncClient(timeout=settings.request_timeout_s) as client:
            service = SensorService(
                settings, sensor_id=sensor_id, uplink=Uplink(ingest_url, token, client),
                stream=stream, queue=queue, clip_policy=clip_policy,
            )
            await service.start()
            stopped = stop or asyncio.Event()
            if stop is None:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stopped.set)
            waiter = asyncio.create_task(service.wait())
            await asyncio.wait([waiter, asyncio.create_task(stopped.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            await service.stop(settings.drain_timeout_s)
            return service.counts
    finally:
        stream_in.stop()
        stream_in.close()


async def _prepend(first: np.ndarray, rest: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
    yield first
    async for block in rest:
        yield block


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SourceError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise SourceError(f"--token-file {path}: the file is empty")
    return token
