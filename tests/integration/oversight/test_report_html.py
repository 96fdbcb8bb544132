"""report.html in a real headless browser (Debian's chromium, driven by Playwright): every
chart is drawn, nothing is fetched from anywhere, and the console stays clean."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from services.oversight import audit, imports
from services.oversight.generate import make_report
from services.oversight.report import Params
from shared.db import create_pool
from tests.integration.oversight import city

CHROMIUM = os.environ.get("SHOTLINE_TEST_CHROMIUM", "/usr/bin/chromium")
CHARTS = ("weekly", "map", "latency", "outcomes")
#: Set to a path to (re)write the README's picture of the report from this test.
SCREENSHOT = os.environ.get("SHOTLINE_REPORT_SCREENSHOT")


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (.ci/system-packages installs it as root)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


async def test_the_report_opens_in_chromium_with_every_chart_drawn_and_no_console_error(
    database_url, tmp_path: Path, chromium: str
):
    from playwright.async_api import async_playwright

    pool = await create_pool(database_url)
    try:
        await city.build_city(pool)
        for parse, store, text, mapping in [
            (imports.parse_outcomes, imports.store_outcomes, city.cad_csv(), city.CAD_MAPPING),
            (imports.parse_calls, imports.store_calls, city.calls_csv(), city.CALLS_MAPPING),
        ]:
            (tmp_path / "map.yml").write_text(mapping)
            kind = "outcomes" if parse is imports.parse_outcomes else "calls"
            parsed = parse(text, imports.load_mapping(tmp_path / "map.yml", kind))
            await store(
                pool, parsed, source_name="t", actor=audit.CLI, now=city.t("2026-11-25T00:00:00")
            )
        params = Params(
            start=city.t("2026-11-01T00:00:00").date(),
            end=city.t("2026-11-30T00:00:00").date(),
            area_layer="districts",
            min_cell_count=1,  # every cell on the map
        )
        written = await make_report(pool, params, tmp_path / "report")
    finally:
        await pool.close()
    page_url = written["report.html"].resolve().as_uri()
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1150, "height": 1400})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "request",
                lambda r: problems.append(f"fetched {r.url}") if r.url != page_url else None,
            )
            await page.goto(page_url)
            await page.wait_for_load_state("load")
            drawn = await page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('svg.chart')].map(
                      svg => [svg.dataset.chart,
                   [...svg.querySelectorAll('rect.bar, rect.cell, path.area')]
                   .filter(e => { const b = e.getBBox(); return b.width > 0 && b.height > 0; })
                   .length]))"""
            )
            assert sorted(drawn) == sorted(CHARTS)
            assert all(n > 0 for n in drawn.values()), drawn
            # the map: 2 districts and 3 cells (X, Y, Z: k = 1 shows all)
            cells = await page.locator("svg[data-chart=map] rect.cell").count()
            areas = await page.locator("svg[data-chart=map] path.area").count()
            assert (cells, areas) == (3, 2)
            assert await page.locator("svg[data-chart=latency] line.target").count() == 1
            footer = await page.locator("footer").inner_text()
            assert "SHA-256 of report.json" in footer
            if SCREENSHOT:
                await page.screenshot(path=SCREENSHOT, full_page=False)
        finally:
            await browser.close()
    assert problems == []
