"""The report as one self-contained HTML page: inline CSS and SVG, no script, no download.

Charts (each an ``<svg class="chart" data-chart=…>``): alerts per week by class (stacked
bars), the coarse alert cells over the area outlines (a map), the latency distribution of
each stage against the target, and the outcome split. Every table follows with its
definition and denominator. The footer names the Shotline version and the SHA-256 of
``report.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from shapely.geometry import shape

from services.oversight.report import CLASSES, Area

COLOURS = {
    "gunfire": "#c0392b",
    "probable_gunfire": "#e67e22",
    "fireworks": "#8e44ad",
    "other": "#7f8c8d",
    "confirmed": "#27ae60",
    "unconfirmed": "#f1c40f",
    "unfounded": "#95a5a6",
    "no disposition": "#dfe6e9",
}
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;padding:2px 8px;
font-size:13px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.def{font-size:13px;color:#555;margin:0} .charts{display:flex;flex-wrap:wrap;gap:24px}
figure{margin:0} figcaption{font-size:13px;color:#555;max-width:520px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
footer{margin-top:3em;font-size:12px;color:#555;word-break:break-all}
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.4f}".rstrip("0")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span><i style="background:{COLOURS.get(n, "#999")}"></i>{escape(n)}</span>'
        for n in names
    )
    return f'<div class="legend">{items}</div>'


def _svg(name: str, width: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg class="chart" data-chart="{name}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{body}</svg>'
    )


def _axis_text(x: float, y: float, text: str, anchor: str = "middle", size: int = 10) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="#333">{escape(text)}</text>'
    )


def weekly_chart(table: dict[str, Any]) -> str:
    """Stacked bars: one per week, one segment per class."""
    width, height, left, bottom, top = 520, 240, 40, 40, 10
    rows = table["rows"]
    peak = max([r[-1] for r in rows] + [1])
    plot_h = height - bottom - top
    step = (width - left - 10) / max(len(rows), 1)
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 5}" y2="{top + plot_h}" '
        'stroke="#333"/>'
    ]
    step_v = max(1, math.ceil(peak / 4))
    peak = step_v * math.ceil(peak / step_v)
    for value in range(0, peak + 1, step_v):
        y = top + plot_h - plot_h * value / peak
        parts.append(_axis_text(left - 4, y + 3, f"{value}", "end"))
    for i, row in enumerate(rows):
        x = left + i * step + step * 0.15
        y = top + plot_h
        for c, count in zip(CLASSES, row[1 : 1 + len(CLASSES)], strict=True):
            h = plot_h * count / peak
            if h > 0:
                y -= h
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" '
                    f'height="{h:.1f}" fill="{COLOURS[c]}"><title>{escape(row[0])} {c}: '
                    f"{count}</title></rect>"
                )
        parts.append(_axis_text(x + step * 0.35, top + plot_h + 14, row[0][5:], size=9))
    if not any(r[-1] for r in rows):
        parts.append(_axis_text(width / 2, height / 2, "no alerts in the period"))
    return _svg("weekly", width, height, "".join(parts), "Alerts per week by class")


def map_chart(table: dict[str, Any], areas: Sequence[Area], cell_m: float) -> str:
    """Area outlines and the shown (not suppressed) grid cells, shaded by alert count."""
    width, height, pad = 520, 420, 12
    geoms = [(a.name, shape(a.geometry)) for a in areas]
    lats = [r[0] for r in table["rows"]]
    lons = [r[1] for r in table["rows"]]
    for _, geom in geoms:
        minx, miny, maxx, maxy = geom.bounds
        lons += [minx, maxx]
        lats += [miny, maxy]
    if not lats:
        lats, lons = [0.0, 0.001], [0.0, 0.001]
    lat0 = (min(lats) + max(lats)) / 2
    kx = math.cos(math.radians(lat0))
    span_x = max((max(lons) - min(lons)) * kx, 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = min((width - 2 * pad) / span_x, (height - 2 * pad) / span_y)
    x0, y1 = min(lons), max(lats)

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return pad + (lon - x0) * kx * scale, pad + (y1 - lat) * scale

    parts = []
    for name, geom in geoms:
        polys = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
        for poly in polys:
            d = "M" + " L".join(
                f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in poly.exterior.coords)
            )
            parts.append(
                f'<path class="area" d="{d} Z" fill="#f6f8fa" stroke="#34495e" '
                f'stroke-width="1"><title>{escape(name)}</title></path>'
            )
        c = geom.representative_point()
        cx, cy = xy(c.x, c.y)
        parts.append(_axis_text(cx, cy, name, size=11))
    peak = max([r[3] for r in table["rows"]] + [1])
    half_lat = cell_m / 111_320.0 / 2
    for lat, lon, area, count, *_ in table["rows"]:
        half_lon = half_lat / max(math.cos(math.radians(lat)), 1e-6)
        xa, ya = xy(lon - half_lon, lat + half_lat)
        xb, yb = xy(lon + half_lon, lat - half_lat)
        opacity = 0.25 + 0.75 * count / peak
        parts.append(
            f'<rect class="cell" x="{xa:.1f}" y="{ya:.1f}" width="{max(xb - xa, 2):.1f}" '
            f'height="{max(yb - ya, 2):.1f}" fill="#c0392b" fill-opacity="{opacity:.2f}">'
            f"<title>{escape(str(area))}: {count} alerts</title></rect>"
        )
    if not parts:
        parts.append(_axis_text(width / 2, height / 2, "no cell reaches the display threshold"))
    return _svg("map", width, height, "".join(parts), "Coarse alert locations per area")


def latency_chart(distribution: dict[str, Any], target_s: float) -> str:
    """Grouped bars per latency bin and stage; a dashed line at the target."""
    width, height, left, bottom, top = 520, 240, 40, 50, 10
    labels = distribution["columns"][1:]
    rows = distribution["rows"]
    peak = max([max(r[1:]) for r in rows] + [1])
    plot_h = height - bottom - top
    group = (width - left - 10) / len(labels)
    bar = group * 0.8 / max(len(rows), 1)
    shades = ["#2980b9", "#16a085", "#2c3e50"]
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 5}" y2="{top + plot_h}" '
        'stroke="#333"/>'
    ]
    for j, label in enumerate(labels):
        gx = left + j * group + group * 0.1
        for i, row in enumerate(rows):
            h = plot_h * row[1 + j] / peak
            if h > 0:
                parts.append(
                    f'<rect class="bar" x="{gx + i * bar:.1f}" y="{top + plot_h - h:.1f}" '
                    f'width="{bar:.1f}" height="{h:.1f}" fill="{shades[i % 3]}">'
                    f"<title>{escape(row[0])} {escape(label)}: {row[1 + j]}</title></rect>"
                )
        parts.append(_axis_text(gx + group * 0.4, top + plot_h + 14, label, size=8))
    # the target lies at the upper edge of the bin labelled "<= target s"
    edge = next((j for j, lab in enumerate(labels) if lab == f"<= {target_s:g} s"), None)
    if edge is not None:
        x = left + (edge + 1) * group
        parts.append(
            f'<line class="target" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" '
            'stroke="#c0392b" stroke-dasharray="4 3"/>'
        )
        parts.append(_axis_text(x + 3, top + 10, f"{target_s:g} s target", "start"))
    for i, row in enumerate(rows):
        parts.append(
            f'<rect x="{left + i * 150}" y="{height - 14}" width="10" height="10" '
            f'fill="{shades[i % 3]}"/>'
        )
        parts.append(_axis_text(left + i * 150 + 14, height - 5, row[0], "start"))
    return _svg("latency", width, height, "".join(parts), "Latency distribution by stage")


def outcome_chart(outcomes: dict[str, Any], total_alerts: int) -> str:
    """One horizontal bar of all alerts: confirmed / unconfirmed / unfounded / none."""
    width, height = 520, 90
    counts = {r[0]: r[1] for r in outcomes["rows"]}
    parts_n = [(f, counts.get(f, 0)) for f in ("confirmed", "unconfirmed", "unfounded")]
    disposed = sum(n for _, n in parts_n)
    parts_n.append(("no disposition", max(total_alerts - disposed, 0)))
    whole = max(sum(n for _, n in parts_n), 1)
    x = 10.0
    parts = []
    for name, n in parts_n:
        w = (width - 20) * n / whole
        if w > 0:
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="20" width="{w:.1f}" height="36" '
                f'fill="{COLOURS[name]}"><title>{name}: {n}</title></rect>'
            )
            if w > 40:
                parts.append(_axis_text(x + w / 2, 42, f"{n}", size=11))
        x += w
    if not parts:
        parts.append(_axis_text(width / 2, 42, "no alerts in the period"))
    parts.append(
        _axis_text(10, 75, f"{total_alerts} alerts, {disposed} with a disposition", "start")
    )
    return _svg("outcomes", width, height, "".join(parts), "Outcome split")


def _table_html(table: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in table["columns"])
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in table["rows"]
    )
    return (
        f"<h3>{escape(table['title'])}</h3>"
        f'<p class="def"><b>Definition:</b> {escape(table["definition"])}</p>'
        f'<p class="def"><b>Denominator:</b> {escape(table["denominator"])}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


_GROUP_TITLES = {
    "1_alerts": "1. Alerts",
    "2_linkage": "2. Linkage with CAD",
    "3_outcomes": "3. Outcomes",
    "4_corroboration": "4. Corroboration by 911 calls",
    "5_verified_shootings": "5. Verified shootings",
    "6_latency": "6. Shot-to-alert latency",
    "7_response": "7. Response and officer time",
    "8_changes_and_sensors": "8. Classification changes and sensor availability",
    "9_holdings": "9. What the system holds",
}


def render_html(report: dict[str, Any], *, sha256: str, areas: Sequence[Area] = ()) -> str:
    figures = report["figures"]
    period = report["period"]
    params = report["parameters"]
    alerts = figures["1_alerts"]
    total = alerts["by_class"]["rows"][-1][1]
    charts = [
        ("Alerts per week by class", weekly_chart(alerts["by_week"]), _legend(CLASSES)),
        (
            f"Alert locations in {params['cell_m']:g} m cells (fewer than "
            f"{params['min_cell_count']} alerts: not shown)",
            map_chart(alerts["map_cells"], areas, params["cell_m"]),
            "",
        ),
        (
            f"Shot-to-alert latency against {params['latency_target_s']:g} s",
            latency_chart(figures["6_latency"]["distribution"], params["latency_target_s"]),
            "",
        ),
        (
            "Outcome split",
            outcome_chart(figures["3_outcomes"]["outcomes"], total),
            _legend(["confirmed", "unconfirmed", "unfounded", "no disposition"]),
        ),
    ]
    chart_html = "".join(
        f"<figure>{svg}<figcaption>{escape(title)}</figcaption>{legend}</figure>"
        for title, svg, legend in charts
    )
    sections = []
    for group in sorted(figures):
        items = []
        for name in sorted(figures[group]):
            item = figures[group][name]
            items.append(_table_html(item))
        sections.append(
            f"<section><h2>{escape(_GROUP_TITLES.get(group, group))}</h2>"
            + "".join(items)
            + "</section>"
        )
    title = f"Shotline oversight report, {period['from']} to {period['to']}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="def">{escape(report["alert_definition"].capitalize())}. Period: '
        f"{escape(period['definition'])} ({escape(period['from_instant'])} – "
        f"{escape(period['until_instant'])}).</p>"
        f'<div class="charts">{chart_html}</div>'
        + "".join(sections)
        + f"<footer>Made by Shotline {escape(report['shotline_version'])}. "
        f'SHA-256 of report.json: <code id="json-sha256">{sha256}</code>. '
        "Locations are grid cells, never exact positions.</footer>"
        "</body></html>\n"
    )
