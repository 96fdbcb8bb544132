"""The sensor program against a real ingest: batched posts, outage, restart, resend.

A detection is queued on disk before it is posted and leaves the queue only when ingest
answers for it; its id is derived from the sensor and the onset. So a resend after an
outage in which ingest took the batch but the answer was lost ends ``duplicate``, and the
topic holds each pulse once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.sensor.main import replay_files
from services.sensor.settings import SensorSettings
from services.sensor.sources import open_file
from tests.integration.ingest.conftest import FrozenClock, read_topic
from tests.support.audio import SR, impulses, write_clip

NOW = datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)
ONSETS = [12_000.25, 30_000.5, 48_000.75]  # samples: 1.0, 2.5 and 4.0 s into the file


class AnswerLosingProxy:
    """Forwards each request to ingest, lets ingest answer, then drops the connection
    without passing the answer on: ingest has the batch, the sensor never hears back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.forwarded = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_w.write(head + body)
            await up_w.drain()
            await up_r.readuntil(b"\r\n\r\n")  # ingest answered: it has the batch
            self.forwarded += 1
            up_w.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()  # the answer is lost
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


def _settings(tmp_path: Path, **kw: object) -> SensorSettings:
    values: dict[str, object] = {
        "queue_path": tmp_path / "queue.sqlite3", "flush_interval_s": 0.05,
        "retry_max_s": 0.2, "drain_timeout_s": 1.0, "clips": False,
    }
    values.update(kw)
    return SensorSettings.model_validate(values)


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    start = NOW - timedelta(seconds=8)
    return write_clip(tmp_path / "roof.wav", impulses(ONSETS, 6.0), start)


@pytest.fixture
def silence(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "quiet.wav", impulses([], 0.5, seed=3), NOW - timedelta(seconds=2))


async def test_resend_after_a_lost_answer_is_answered_duplicate_and_the_pulse_is_kept_once(
    start_ingest, register, kafka_bootstrap, topics, tmp_path, recording, silence
):
    sensor = await register("roof-1")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    proxy = AnswerLosingProxy(ingest.port)
    proxy_port = await proxy.start()
    settings = _settings(tmp_path)

    # 1. the outage: ingest takes the batch, the answer never reaches the sensor
    first = await replay_files(
        settings, sensor_id="roof-1", token=sensor.token,
        ingest_url=f"http://127.0.0.1:{proxy_port}", files=[open_file(recording, None)],
    )
    await proxy.stop()
    assert proxy.forwarded >= 1
    assert first.onsets == 3
    assert (first.accepted, first.duplicate, first.left_queued) == (0, 0, 3)

    # 2. the sensor restarts with ingest reachable: only the queue has something to send
    second = await replay_files(
        settings, sensor_id="roof-1", token=sensor.token, ingest_url=ingest.url,
        files=[open_file(silence, None)],
    )
    assert (second.onsets, second.accepted, second.duplicate, second.left_queued) == (0, 0, 3, 0)

    records = await read_topic(kafka_bootstrap, topics.detections, expected=4, timeout_s=3)
    ids = sorted(r.detection_id for _, r in records)
    assert len(ids) == 3 and len(set(ids)) == 3  # each pulse once, never a second one
    arrivals = sorted(r.arrival_time for _, r in records)
    expected = [NOW - timedelta(seconds=8) + timedelta(seconds=o / SR) for o in ONSETS]
    for got, want in zip(arrivals, expected, strict=True):
        assert abs((got - want).total_seconds()) < 50e-6  # sub-sample onsets, 21 µs a sample


async def test_replaying_the_same_recording_twice_sends_the_same_ids(
    start_ingest, register, tmp_path, recording
):
    """Ids come from sensor and onset, not a counter: a second replay is all duplicates."""
    sensor = await register("roof-2")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    settings = _settings(tmp_path)
    kwargs = {"sensor_id": "roof-2", "token": sensor.token, "ingest_url": ingest.url}
    first = await replay_files(settings, files=[open_file(recording, None)], **kwargs)
    again = await replay_files(settings, files=[open_file(recording, None)], **kwargs)
    assert (first.accepted, first.duplicate) == (3, 0)
    assert (again.accepted, again.duplicate) == (0, 3)


async def test_a_detection_waits_on_disk_through_an_outage_and_goes_out_once_ingest_is_back(
    start_ingest, register, kafka_bootstrap, topics, tmp_path, recording, silence
):
    sensor = await register("roof-3")
    settings = _settings(tmp_path)
    down = await replay_files(
        settings, sensor_id="roof-3", token=sensor.token, ingest_url="http://127.0.0.1:9",
        files=[open_file(recording, None)],
    )
    assert down.left_queued == 3
    ingest = await start_ingest(clock=FrozenClock(NOW))
    back = await replay_files(
        settings, sensor_id="roof-3", token=sensor.token, ingest_url=ingest.url,
        files=[open_file(silence, None)],
    )
    assert (back.accepted, back.duplicate, back.left_queued) == (3, 0, 0)
    records = await read_topic(kafka_bootstrap, topics.detections, expected=3, timeout_s=5)
    assert len(records) == 3
    assert all(r.features.rise_time_ms is not None for _, r in records)


async def test_each_accepted_detection_uploads_its_clip_of_at_most_a_second_either_side(
    start_ingest, register, db, tmp_path, recording
):
    sensor = await register("roof-4")
    ingest = await start_ingest(clock=FrozenClock(NOW))
    settings = _settings(tmp_path, clips=True)
    done = await replay_files(
        settings, sensor_id="roof-4", token=sensor.token, ingest_url=ingest.url,
        files=[open_file(recording, None)],
    )
    assert (done.accepted, done.clips_sent) == (3, 3)
    rows = await db.fetch("SELECT detection_id, duration_s, sample_rate FROM audio_clips")
    assert len(rows) == 3
    # onsets at 1.0, 2.5 and 4.0 s of a 6 s file: each clip is the onset ± 1 s, never more
    assert all(r["sample_rate"] == SR and 1.9 <= r["duration_s"] <= 2.0 for r in rows)
