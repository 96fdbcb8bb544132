"""The sensor as an embeddable service: audio in, detections (and clips) out to ingest.

``SensorService(settings, sensor_id=…, uplink=…, source=…)`` with ``start`` / ``stop`` /
``wait`` / ``abort``. Two tasks:

* **capture** reads the audio source block by block, runs the causal detector, keeps the
  last ``ring_s`` seconds in memory (:class:`AudioRing`), and once an onset has enough audio
  after it computes its features, writes the detection to the on-disk queue (before any
  post) and, if clips are on, cuts the clip once its ``clip_post_s`` has been heard;
* **uplink** posts what is queued in batches; on an outage it keeps everything queued and
  retries with backoff (up to ``retry_max_s``), so a detection is resent with the same id
  until ingest answers ``accepted`` or ``duplicate``. Clips follow their accepted detection.

A file source ends; the service then drains the queue for at most ``drain_timeout_s`` and
stops (what is left stays on disk for the next run). A live source runs until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from services.sensor import features as feats
from services.sensor.detections import detection_body, detection_id, onset_time
from services.sensor.detector import DetectorConfig, ImpulseDetector, Onset
from services.sensor.queue import DetectionQueue
from services.sensor.ring import AudioRing
from services.sensor.settings import SensorSettings
from services.sensor.uplink import Uplink
from shared.audio import ClipPolicy, encode_wav

log = logging.getLogger("shotline.sensor")

#: Full scale of 16-bit audio (the kit's mu-law decodes to at most ±32,124).
FULL_SCALE_16 = 32_767.0
#: Clock anchors kept from a live source (one per block: a minute at 100 ms blocks).
ANCHORS_KEPT = 600


@dataclass
class Counts:
    samples: int = 0
    onsets: int = 0
    queued: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    retries: int = 0
    clips_sent: int = 0
    clips_withheld: int = 0
    last_error: str | None = None
    statuses: dict[str, str] = field(default_factory=dict)


@dataclass
class AudioStream:
    """What the capture task reads: the instant of sample 0, the rate, and the blocks."""

    start: datetime
    sample_rate: int
    blocks: AsyncIterator[np.ndarray]
    full_scale: float = FULL_SCALE_16
    #: (stream sample, instant) pairs a live source adds as it reads (every block, the last
    #: :data:`ANCHORS_KEPT`): an onset is timed by the straight line through them, so a sound
    #: card's crystal, which drifts against the disciplined system clock by tens of ppm,
    #: never accumulates error, and one late callback does not jolt the time.
    anchors: deque[tuple[int, datetime]] = field(
        default_factory=lambda: deque(maxlen=ANCHORS_KEPT)
    )

    def time_of(self, sample: float) -> datetime:
        if len(self.anchors) < 2:
            return onset_time(self.start, sample, self.sample_rate)
        ref_sample, ref = self.anchors[0]
        xs = np.array([a for a, _ in self.anchors], dtype=np.float64) - ref_sample
        ys = np.array([(w - ref).total_seconds() for _, w in self.anchors])
        slope, offset = np.polyfit(xs, ys, 1)
        return ref + timedelta(seconds=float(slope * (sample - ref_sample) + offset))


class SensorService:
    def __init__(
        self,
        settings: SensorSettings,
        *,
        sensor_id: str,
        uplink: Uplink,
        stream: AudioStream,
        detector: DetectorConfig | None = None,
        queue: DetectionQueue | None = None,
        clip_policy: ClipPolicy | None = None,
        on_progress: Callable[[Counts], None] | None = None,
    ) -> None:
        self.settings = settings
        self.sensor_id = sensor_id
        self.uplink = uplink
        self.stream = stream
        config = detector or DetectorConfig()
        if config.sample_rate != stream.sample_rate:
            config = DetectorConfig(**{**config.__dict__, "sample_rate": stream.sample_rate})
        self.detector = ImpulseDetector(config)
        self.queue = (
            queue if queue is not None
            else DetectionQueue(settings.queue_path, settings.queue_capacity)
        )
        self.clip_policy = clip_policy or ClipPolicy()
        self.counts = Counts()
        self._on_progress = on_progress
        self._ring = AudioRing(stream.sample_rate, settings.ring_s)
        self._waiting: list[Onset] = []  # onsets whose features need more audio
        self._clips_due: list[tuple[str, int]] = []  # (detection_id, onset sample)
        self._clips_ready: dict[str, bytes] = {}  # in memory only, until posted
        self._capture_done = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._capture(), name="sensor-capture"),
            asyncio.create_task(self._uplink(), name="sensor-uplink"),
        ]

    async def wait(self) -> None:
        """Returns when both tasks ended (a file was replayed and drained), or raises
        :class:`UplinkRefused` / the capture's error."""
        for task in self._tasks:
            await asyncio.shield(task)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop capturing, post what is queued for up to ``timeout_s``, then end."""
        self._stopping = True
        self._capture_done.set()
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.queue.close()

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()

    # -- capture ---------------------------------------------------------------------------
    async def _capture(self) -> None:
        try:
            async for block in self.stream.blocks:
                if self._stopping:
                    break
                self._feed(np.asarray(block, dtype=np.float64))
                await asyncio.sleep(0)  # let the uplink run between blocks
        finally:
            self._finish_waiting()
            self._capture_done.set()
            self._wake.set()

    def _feed(self, block: np.ndarray) -> None:
        onsets = self.detector.process(block)
        self._ring.append(block, self.detector.last_highpassed)
        self.counts.samples += block.size
        self.counts.onsets += len(onsets)
        self._waiting.extend(onsets)
        sr = self.stream.sample_rate
        after = math.ceil(feats.NEEDED_AFTER_MS * sr / 1000) + 1
        ready = [o for o in self._waiting if o.sample + after <= self._ring.end]
        self._waiting = [o for o in self._waiting if o.sample + after > self._ring.end]
        for onset in ready:
            self._detected(onset)
        post = int(self.settings.clip_post_s * sr)
        due = [c for c in self._clips_due if c[1] + post <= self._ring.end]
        self._clips_due = [c for c in self._clips_due if c[1] + post > self._ring.end]
        for did, at in due:
            self._cut_clip(did, at)
        if ready or due:
            self._wake.set()
        if self._on_progress is not None:
            self._on_progress(self.counts)

    def _detected(self, onset: Onset, features: dict | None = None) -> None:
        if features is None:
            features = self._features(onset)
        at = self.stream.time_of(onset.sample)
        body = detection_body(self.sensor_id, at, features)
        if self.queue.put(body):
            self.counts.queued += 1
        if self.settings.clips:
            self._clips_due.append((body["detection_id"], int(onset.sample)))

    def _features(self, onset: Onset) -> dict | None:
        sr = self.stream.sample_rate
        lo = math.floor(onset.sample) - math.ceil(feats.NEEDED_BEFORE_MS * sr / 1000) - 1
        hi = math.floor(onset.sample) + math.ceil(feats.NEEDED_AFTER_MS * sr / 1000) + 1
        try:
            raw, hp = self._ring.window(lo, hi)
            f = feats.compute(
                raw, hp, onset.sample - lo, onset.peak_sample - lo, onset.background_rms,
                sample_rate=sr, full_scale=self.stream.full_scale,
                full_scale_db_spl=self.settings.full_scale_db_spl,
            )
        except ValueError:
            return None  # too close to the start of the stream: arrival time only
        return f.wire()

    def _finish_waiting(self) -> None:
        """The stream ended: onsets still waiting for audio go out with what is known."""
        for onset in self._waiting:
            self._detected(onset, self._features(onset))
        self._waiting = []
        for did, at in self._clips_due:
            self._cut_clip(did, at)
        self._clips_due = []

    def _cut_clip(self, did: str, at: int) -> None:
        sr = self.stream.sample_rate
        lo = max(self._ring.start, at - int(self.settings.clip_pre_s * sr))
        hi = min(self._ring.end, at + int(self.settings.clip_post_s * sr))
        if hi - lo < sr // 20:
            return
        raw, _ = self._ring.window(lo, hi)
        if not self.clip_policy.keeps(raw, sr, at - lo):
            self.counts.clips_withheld += 1
            log.info("clip of %s withheld: mostly speech-like sound", did)
            return
        if len(self._clips_ready) < 64:  # bounded: a few clips in memory at most
            self._clips_ready[did] = encode_wav(raw, sr, self.stream.full_scale)

    # -- uplink ----------------------------------------------------------------------------
    async def _uplink(self) -> None:
        backoff = self.settings.flush_interval_s
        batch = self.settings.batch_max
        drain_deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            items = self.queue.peek(batch)
            if not items:
                await self._send_clips()
                if self._capture_done.is_set():
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.flush_interval_s)
                continue
            if self._capture_done.is_set():
                if drain_deadline is None:
                    drain_deadline = loop.time() + self.settings.drain_timeout_s
                elif loop.time() > drain_deadline:
                    log.warning("%d detections left queued on disk for the next run", len(items))
                    return
            result = await self.uplink.post([q.body for q in items])  # UplinkRefused: stop
            if result.too_large and batch > 1:
                batch = max(1, batch // 2)
                continue
            if result.transient is not None:
                self.queue.attempted([q.detection_id for q in items])
                self.counts.retries += 1
                self.counts.last_error = result.transient
                wait = result.retry_after_s or backoff
                backoff = min(self.settings.retry_max_s, backoff * 2)
                await asyncio.sleep(wait * random.uniform(0.8, 1.2))
                continue
            backoff = self.settings.flush_interval_s
            self.queue.remove(result.done)
            for did, status in result.statuses.items():
                setattr(self.counts, status, getattr(self.counts, status) + 1)
                self.counts.statuses[did] = status
            if self._on_progress is not None:
                self._on_progress(self.counts)
            await self._send_clips()

    async def _send_clips(self) -> None:
        """Clips of detections ingest has (accepted or duplicate); others wait (bounded)."""
        for did in list(self._clips_ready):
            status = self.counts.statuses.get(did)
            if status not in ("accepted", "duplicate"):
                if status == "rejected" or (status is None and self._capture_done.is_set()
                                            and len(self.queue) == 0):
                    del self._clips_ready[did]  # its detection went out in an earlier run
                continue
            code = await self.uplink.post_clip(did, self._clips_ready[did])
            if code in (200, 201, 409):
                self.counts.clips_sent += code != 409
                del self._clips_ready[did]
            elif code in (0, 429, 500, 502, 503, 504):
                if self._capture_done.is_set():
                    self._clips_ready.clear()  # ending: clips are never kept on disk
                return  # transient: try again on the next round
            else:
                log.warning("clip of %s refused by ingest (%d); not resent", did, code)
                del self._clips_ready[did]


__all__ = ["AudioStream", "Counts", "SensorService", "detection_id"]
