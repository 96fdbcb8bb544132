"""From sound to CAD: simulated sensors' audio through the sensor program (what ``make run``
shows), a located alert whose clip links play the sensors' clips."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from rich.console import Console

from services.demo import DemoReceiver, register_array, subscribe
from services.locator.simulate import scenario
from services.pipeline import Pipeline
from services.sensor.simulated import hear, stream_start_for
from shared.geo import haversine_m
from tests.conftest import Topics
from tests.e2e.test_pipeline import ARRAY, _settings, _wait_for

PLACEHOLDER = "http://clips.invalid"


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> AsyncIterator[Pipeline]:
    settings = _settings(topics)
    dispatch = settings.dispatch.model_copy(
        update={"clip_url_secret": SecretStr("e2e-clip-secret-0123456789"),
                "public_url": PLACEHOLDER}
    )
    running = Pipeline(dataclasses.replace(settings, dispatch=dispatch), kafka_bootstrap,
                       database_url)
    await running.start()
    yield running
    await running.stop(10)


async def test_a_shot_the_sensors_hear_reaches_the_cad_with_playable_clips(
    pipeline: Pipeline,
) -> None:
    tokens = await register_array(pipeline.database_url, ARRAY)
    cad = DemoReceiver(Console(quiet=True))
    await cad.start()
    try:
        await subscribe(pipeline, cad, ARRAY, name="sound CAD")
        start = datetime.now(UTC) + timedelta(seconds=1.5)
        shot = scenario("shot", ARRAY, start=start, rng=np.random.default_rng(11))
        heard = await hear(list(shot.detections), stream_start=stream_start_for(start),
                           tokens=tokens, ingest_url=pipeline.ingest_url, seed=11)
        assert heard.onsets >= 4 and heard.accepted == heard.onsets
        await _wait_for(lambda: any(a.get("audio") for a in cad.received), timeout_s=30)
    finally:
        await cad.stop()
    alert = next(a for a in cad.received if a.get("audio"))
    truth = shot.truth[0]
    error_m = haversine_m(alert["location"]["lat"], alert["location"]["lon"], truth.lat, truth.lon)
    assert error_m < 25, f"located {error_m:.1f} m from the truth from the sensors' own onsets"
    async with httpx.AsyncClient(timeout=10) as http:
        for link in alert["audio"]:
            url = link["url"].replace(PLACEHOLDER, pipeline.dispatch_url)
            clip = await http.get(url)
            assert clip.status_code == 200
            assert hashlib.sha256(clip.content).hexdigest() == link["sha256"]
