"""``shotline sensor``: audio → onsets → features → detections posted to ingest.

Replay: ``shotline sensor --sensor-id ID --token-file F --ingest URL --flac a.flac --flac
b.flac`` (each file's start from ``--start`` or its sidecar JSON). Live:
``--device NAME`` (PortAudio). Every operator mistake ends in one line naming it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from services.sensor.main import read_token, replay_files, run_device
from services.sensor.settings import SensorSettings
from services.sensor.sources import SourceError, open_file
from services.sensor.uplink import UplinkRefused
from shared.audio import ClipPolicy
from shared.cli import fail
from shared.schemas import is_identifier

out = Console(stderr=True)


def _start(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--start {value!r} is not an RFC 3339 time, e.g. 2018-12-19T00:49:26Z") from (
            None
        )
    if parsed.tzinfo is None:
        raise fail("--start must carry a UTC offset, e.g. 2018-12-19T00:49:26Z")
    return parsed


def sensor(
    sensor_id: Annotated[str, typer.Option("--sensor-id", help="This sensor's registered id")],
    token_file: Annotated[Path, typer.Option("--token-file", help="File holding its token")],
    ingest: Annotated[str, typer.Option("--ingest", help="Ingest base URL, e.g. http://host:8080")],
    wav: Annotated[list[Path] | None, typer.Option("--wav", help="WAV file(s) to replay")] = None,
    flac: Annotated[
        list[Path] | None, typer.Option("--flac", help="FLAC file(s) to replay")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="UTC time of the first sample (else sidecar)")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Live input device (PortAudio name)")
    ] = None,
    sample_rate: Annotated[int, typer.Option(help="Live device sample rate, Hz")] = 12_000,
    clips: Annotated[bool, typer.Option(help="Upload a clip of each detection")] = True,
    speech_share: Annotated[
        float, typer.Option(help="Withhold a clip whose voice-like share exceeds this")
    ] = 0.3,
) -> None:
    """Listen for impulses and post them to ingest (files for replay, or a live device)."""
    if not is_identifier(sensor_id):
        raise fail(f"--sensor-id {sensor_id!r} must be 1-128 letters, digits, '.', '_', ':', '-'")
    if not ingest.startswith(("http://", "https://")):
        raise fail(f"--ingest {ingest!r} must be an http:// or https:// URL")
    paths = [*(wav or []), *(flac or [])]
    if bool(paths) == (device is not None):
        raise fail("give either --wav/--flac files to replay or --device NAME, not both")
    settings = SensorSettings(clips=clips)
    policy = ClipPolicy(max_voice_share=speech_share)
    try:
        token = read_token(token_file)
        if device is not None:
            counts = asyncio.run(
                run_device(settings, sensor_id=sensor_id, token=token, ingest_url=ingest,
                           device=device or None, sample_rate=sample_rate, clip_policy=policy)
            )
            out.print(f"stopped: {counts.onsets} onsets, {counts.accepted} accepted, "
                      f"{counts.duplicate} duplicate")
            return
        when = _start(start)
        files = [open_file(p, when) for p in paths]
    except SourceError as exc:
        raise fail(str(exc)) from None

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(), console=out, transient=False,
    ) as progress:
        tasks = [
            progress.add_task(f.path.name, total=f.frames, info="") for f in files
        ]

        def show(index: int, counts) -> None:
            progress.update(
                tasks[index], completed=counts.samples,
                info=(f"onsets {counts.onsets}  accepted {counts.accepted}  duplicate "
                      f"{counts.duplicate}  rejected {counts.rejected}  retries {counts.retries}"
                      + (f"  [yellow]{counts.last_error}[/]" if counts.retries else "")),
            )

        try:
            summary = asyncio.run(
                replay_files(settings, sensor_id=sensor_id, token=token, ingest_url=ingest,
                             files=files, clip_policy=policy, on_progress=show)
            )
        except UplinkRefused as exc:
            raise fail(str(exc)) from None
    out.print(
        f"{summary.files} file(s), {summary.seconds:.1f} s of audio: {summary.onsets} onsets; "
        f"ingest accepted {summary.accepted}, duplicate {summary.duplicate}, rejected "
        f"{summary.rejected}; clips sent {summary.clips_sent}, withheld {summary.clips_withheld}"
        + (f"; {summary.left_queued} left queued on disk" if summary.left_queued else "")
    )
    if summary.left_queued:
        raise typer.Exit(3)
