"""The console in a real browser (Debian's chromium driven by Playwright): detections posted
through ingest appear on the page within a second; a reviewer confirms one on its page and
the review-required CAD receives it; another rejects one and a CAP CAD gets a Cancel that
validates against the OASIS XSD and references every message it cancels. The page is a
portrait tablet driven by touch (finger-sized buttons).

A failing test leaves a screenshot of the page in its tmp_path (named in the error).
"""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.demo import array_geofence, register_array
from services.dispatch.settings import DispatchSettings
from services.ingest.settings import IngestSettings
from services.locator.settings import LocatorSettings
from services.locator.simulate import build_array, scenario, to_detection_in
from services.pipeline import Pipeline, PipelineSettings
from tests.conftest import Topics
from tests.integration.dispatch.conftest import receivers  # noqa: F401 (fixture)
from tests.integration.dispatch.helpers import Receiver
from tests.unit.dispatch.standards import cap_schema

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/system-packages)"
)
ARRAY = build_array(density_per_sq_mi=12, area_sq_mi=2.0, seed=7)
TOKEN = "console-admin-token-0123456789"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"


@pytest.fixture
async def pipeline(
    kafka_bootstrap: str, database_url: str, topics: Topics
) -> AsyncIterator[Pipeline]:
    common: dict[str, Any] = {
        "detections_topic": topics.detections,
        "incidents_topic": topics.incidents,
        "topic_partitions": topics.partitions,
        "kafka_session_timeout_ms": 2000,
    }
    settings = PipelineSettings(
        ingest=IngestSettings(port=0, **common),
        locator=LocatorSettings(metrics_port=-1, group_id=f"loc-{topics.detections}", **common),
        dispatch=DispatchSettings(
            port=0,
            admin_token=TOKEN,
            group_id=f"dis-{topics.incidents}",
            poll_interval_s=0.05,
            review_deadline_s=120,
            allowed_target_networks=["127.0.0.0/8"],
            **common,
        ),
    )
    running = Pipeline(settings, kafka_bootstrap, database_url)
    await running.start()
    yield running
    await running.stop(10)


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        # a tablet held upright, driven by touch (the floor's supervisors carry one)
        context = await browser.new_context(
            viewport={"width": 820, "height": 1180}, has_touch=True, device_scale_factor=2
        )
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.errors = errors  # type: ignore[attr-defined]
        try:
            yield tab
        finally:
            # the page as the test left it (kept in tmp_path; its path is printed)
            shot = tmp_path / "console.png"
            await tab.screenshot(path=str(shot), full_page=True)
            print(f"console screenshot: {shot}")
            await browser.close()


async def _subscribe(pipeline: Pipeline, receiver: Receiver, **extra: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{pipeline.dispatch_url}/v1/subscriptions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "name": extra.pop("name"),
                "channel": "webhook",
                "geofence": array_geofence(ARRAY),
                "classes": ["gunfire", "probable_gunfire"],
                "min_probability": 0.0,
                "url": receiver.url,
                **extra,
            },
        )
        assert answer.status_code == 201, answer.text


async def _fire(pipeline: Pipeline, tokens: dict[str, str], seed: int) -> None:
    start = datetime.now(UTC) - timedelta(seconds=9)  # every pulse already "heard"
    shot = scenario("shot", ARRAY, start=start, rng=np.random.default_rng(seed))
    async with httpx.AsyncClient(timeout=10) as http:
        for r in shot.detections:
            answer = await http.post(
                f"{pipeline.ingest_url}/v1/detections",
                headers={"Authorization": f"Bearer {tokens[r.sensor_id]}"},
                json={"detections": [to_detection_in(r)]},
            )
            assert answer.status_code == 202, answer.text


async def _open_console(page: Any, pipeline: Pipeline) -> None:
    await page.goto(f"{pipeline.dispatch_url}/console")
    await page.fill("#token", TOKEN)
    await page.click("#login-button")
    await page.wait_for_selector("#feed-state.on", timeout=5000)


async def _shown_within(page: Any, pipeline: Pipeline, timeout_s: float = 30) -> str:
    """Waits for the first incident on the page; returns its id, after checking it was
    drawn less than a second after dispatch stored it."""
    item = await page.wait_for_selector("#incidents li", timeout=timeout_s * 1000)
    incident_id = await item.get_attribute("data-incident-id")
    shown = await page.evaluate(
        "(id) => window.shotlineShown.filter(s => s[0] === id).map(s => s[2])[0]", incident_id
    )
    async with httpx.AsyncClient(timeout=10) as http:
        detail = (
            await http.get(
                f"{pipeline.dispatch_url}/v1/incidents/{incident_id}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        ).json()
    stored = datetime.fromisoformat(detail["versions"][0]["consumed_at"])
    lag_s = shown / 1000 - stored.timestamp()
    assert lag_s < 1.0, f"shown {lag_s:.3f} s after it was stored"
    return str(incident_id)


async def test_a_reviewer_confirms_an_incident_on_its_page_and_the_cad_receives_it(
    pipeline: Pipeline, page: Any, receivers: Any  # noqa: F811
) -> None:
    tokens = await register_array(pipeline.database_url, ARRAY)
    cad = await receivers()
    await _subscribe(pipeline, cad, name="review-required CAD", review="required")
    await _open_console(page, pipeline)
    await _fire(pipeline, tokens, seed=11)
    incident_id = await _shown_within(page, pipeline)
    await page.wait_for_selector(f'li[data-incident-id="{incident_id}"] .badge.review')
    assert cad.received == []  # held for review
    await page.tap(f'li[data-incident-id="{incident_id}"]')
    await page.wait_for_selector("#confirm")
    for button in ("#confirm", "#reclassify", "#reject"):  # finger-sized targets
        box = await page.locator(button).bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44, (button, box)
    assert await page.locator("#map .sensor").count() == len(ARRAY.sensors)
    await page.fill("#reviewer", "ana")
    await page.fill("#reason", "three clear impulses, no event nearby")
    await page.tap("#confirm")
    await page.wait_for_selector("#decide-result:has-text('stored as version')")
    (got,) = await cad.wait_for(1, timeout_s=10)
    import json

    alert = json.loads(got.body)["data"]
    assert (alert["incident_id"], alert["event"]) == (incident_id, "created")
    assert alert["review"]["status"] == "confirmed"
    assert alert["review"]["reviewed_by"] == "ana"
    # the incident page shows the delivery as it happened
    for _ in range(50):
        await page.evaluate("location.hash = '#'")
        await page.evaluate(f"location.hash = '#incident/{incident_id}'")
        await page.wait_for_selector("#deliveries")
        if await page.locator("#deliveries td.status:has-text('delivered')").count():
            break
        await asyncio.sleep(0.2)
    assert await page.locator("#deliveries td.status:has-text('delivered')").count() == 1
    assert await page.locator("#versions tr:has-text('confirmed by ana')").count() == 1
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_reviewer_rejects_an_incident_and_the_cad_gets_a_cap_cancel(
    pipeline: Pipeline, page: Any, receivers: Any  # noqa: F811
) -> None:
    tokens = await register_array(pipeline.database_url, ARRAY)
    cad = await receivers()
    await _subscribe(pipeline, cad, name="CAP CAD", format="cap")  # no review: told at once
    await _open_console(page, pipeline)
    await _fire(pipeline, tokens, seed=12)
    incident_id = await _shown_within(page, pipeline)
    await cad.wait_for(1, timeout_s=10)
    await page.click(f'li[data-incident-id="{incident_id}"]')
    await page.fill("#reviewer", "bo")
    await page.fill("#reason", "roofers' nail gun, confirmed by phone")
    await page.click("#reject")
    await page.wait_for_selector("#decide-result:has-text('stored as version')")
    received = await cad.wait_for(2, timeout_s=10)
    await asyncio.sleep(0.5)
    messages = [ET.fromstring(r.body) for r in cad.received]
    for r in cad.received:
        cap_schema().validate(r.body.decode())
    kinds = [m.findtext(f"{CAP}msgType") for m in messages]
    assert kinds[0] == "Alert" and kinds[-1] == "Cancel", kinds
    cancel = messages[-1]
    earlier = {
        f"{m.findtext(f'{CAP}sender')},{m.findtext(f'{CAP}identifier')},{m.findtext(f'{CAP}sent')}"
        for m in messages[:-1]
    }
    assert set((cancel.findtext(f"{CAP}references") or "").split()) == earlier
    assert len(received) == len(messages)
    await page.click("text=← live")
    await page.wait_for_selector(f'li[data-incident-id="{incident_id}"] .badge.cancelled')
    assert page.errors == []  # type: ignore[attr-defined]
