"""The whole pipeline, as a city would run it: sensors post over HTTP, a CAD receives alerts.

Real broker, real PostgreSQL, real HTTP on loopback; ingest, locator and dispatch run under
the same supervisor as ``shotline run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console

from services.demo import DemoReceiver, array_geofence, register_array, subscribe
from services.dispatch import metrics as dispatch_metrics
from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings
from services.locator import metrics as locator_metrics
from services.locator.settings import LocatorSettings
from services.locator.simulate import build_array, scenario, to_detection_in
from services.pipeline import Pipeline, PipelineSettings
from shared.geo import haversine_m
from tests.conftest import Topics

ARRAY = build_array(density_per_sq_mi=12, area_sq_mi=2.0, seed=7)


def _settings(topics: Topics) -> PipelineSettings:
    common: dict[str, Any] = {
        "detections_topic": topics.detections,
        "incidents_topic": topics.incidents,
        "topic_partitions": topics.partitions,
        "kafka_session_timeout_ms": 2000,
    }
    return PipelineSettings(
        ingest=IngestSettings(port=0, **common),
        locator=LocatorSettings(metrics_port=-1, group_id=f"loc-{topics.detections}", **common),
        dispatch=DispatchSettings(
            port=0,
            admin_token="e2e-admin-token-0123456789",
            group_id=f"dis-{topics.incidents}",
            poll_interval_s=0.05,
            allowed_target_networks=["127.0.0.0/8"],  # the test's CAD receiver
            **common,
        ),
    )


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> AsyncIterator[Pipeline]:
    running = Pipeline(_settings(topics), kafka_bootstrap, database_url)
    await running.start()
    yield running
    await running.stop(10)


async def _post(
    pipeline: Pipeline, tokens: dict[str, str], items: list[tuple[str, dict]]
) -> list[str]:
    statuses: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for sensor_id, item in items:
            answer = await http.post(
                f"{pipeline.ingest_url}/v1/detections",
                headers={"Authorization": f"Bearer {tokens[sensor_id]}"},
                json={"detections": [item]},
            )
            assert answer.status_code == 202, answer.text
            statuses.append(answer.json()["results"][0]["status"])
    return statuses


def _stages() -> dict[str, float]:
    """How far detections got, stage by stage (this process's counters, all tests so far):
    names the stage that lost a shot when an alert does not arrive."""
    names = {
        "locator consumed": "shotline_locator_detections_consumed_total",
        "locator published": "shotline_locator_incidents_published_total",
        "dispatch consumed": "shotline_dispatch_incidents_consumed_total",
        "dispatch outbox rows": "shotline_dispatch_outbox_rows_total",
        "deliveries": "shotline_dispatch_deliveries_total",
    }
    totals = {}
    for label, name in names.items():
        totals[label] = sum(
            sample.value
            for registry in (locator_metrics.REGISTRY, dispatch_metrics.REGISTRY)
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == name
        )
    return totals


async def _wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.1)


async def test_a_shot_heard_by_the_array_reaches_the_cad_once_and_signed(
    pipeline: Pipeline,
) -> None:
    tokens = await register_array(pipeline.database_url, ARRAY)
    cad = DemoReceiver(Console(quiet=True))
    elsewhere = DemoReceiver(Console(quiet=True))  # subscribed to a geofence far away
    await cad.start()
    await elsewhere.start()
    try:
        await subscribe(pipeline, cad, ARRAY, name="downtown CAD")
        far = build_array(center=(40.0, -75.0), seed=1)  # Philadelphia
        await subscribe(pipeline, elsewhere, far, name="Philadelphia CAD")
        assert array_geofence(far) != array_geofence(ARRAY)

        # arrivals already in the past, so every pulse has "been heard" when posted
        start = datetime.now(UTC) - timedelta(seconds=9)
        shot = scenario("shot", ARRAY, start=start, rng=np.random.default_rng(11))
        items = [(r.sensor_id, to_detection_in(r)) for r in shot.detections]
        assert set(await _post(pipeline, tokens, items)) == {"accepted"}

        await _wait_for(lambda: len(cad.received) >= 1, timeout_s=30)
        assert len(cad.received) == 1, (
            f"the CAD got exactly one alert (signature verified); stages: {_stages()}"
        )
        alert = cad.received[0]
        truth = shot.truth[0]
        error_m = haversine_m(
            alert["location"]["lat"], alert["location"]["lon"], truth.lat, truth.lon
        )
        assert error_m < 25, f"located {error_m:.1f} m from the truth"
        assert alert["event"] == "created"
        assert alert["rounds"] == 1
        assert alert["classification"] in ("gunfire", "probable_gunfire")

        # The sensors resend everything (lost 202s): duplicates, and no second alert.
        assert set(await _post(pipeline, tokens, items)) == {"duplicate"}
        await asyncio.sleep(3)
        assert len(cad.received) == 1
        assert elsewhere.received == []
    finally:
        await cad.stop()
        await elsewhere.stop()


async def test_each_services_metrics_endpoint_shows_only_that_service(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> None:
    """Under one process (``shotline run``) a scrape of ingest must not count dispatch's or
    the locator's series too: Prometheus adds up the three jobs, so every dashboard sum
    would be three times the truth."""
    settings = _settings(topics)
    settings.locator = settings.locator.model_copy(update={"metrics_port": 0})
    running = Pipeline(settings, kafka_bootstrap, database_url)
    await running.start()
    try:
        locator = running.services["locator"]
        async with httpx.AsyncClient(timeout=10) as http:
            pages = {
                "ingest": (await http.get(f"{running.ingest_url}/metrics")).text,
                "dispatch": (await http.get(f"{running.dispatch_url}/metrics")).text,
                "locator": (
                    await http.get(f"http://127.0.0.1:{locator.metrics_port}/metrics")  # type: ignore[attr-defined]
                ).text,
            }
    finally:
        await running.stop(10)
    for service, page in pages.items():
        families = {
            line.split()[2] for line in page.splitlines() if line.startswith("# TYPE shotline_")
        }
        assert families, f"{service} exposes none of its metrics"
        assert all(f.startswith(f"shotline_{service}_") for f in families), (
            service,
            sorted(f for f in families if not f.startswith(f"shotline_{service}_")),
        )
        assert "process_cpu_seconds_total" in page  # the process figures stay on each
