"""Writing a built report: ``report.json`` (canonical bytes), one CSV per table, and
``report.html`` (self-contained, inline SVG charts, naming the version and the JSON's
SHA-256)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.oversight.render.csv import table_csv
from services.oversight.render.html import render_html
from services.oversight.report import Area, iter_tables


def report_json(report: dict[str, Any]) -> bytes:
    """The canonical bytes of the report: sorted keys, fixed indentation, UTF-8."""
    return (json.dumps(report, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def write_report(
    report: dict[str, Any], out_dir: Path, *, areas: Sequence[Area] = ()
) -> dict[str, Path]:
    """Write every file of the report into ``out_dir`` (created); name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    body = report_json(report)
    (out_dir / "report.json").write_bytes(body)
    written["report.json"] = out_dir / "report.json"
    for stem, table in iter_tables(report):
        path = out_dir / f"{stem}.csv"
        path.write_bytes(table_csv(table))
        written[path.name] = path
    digest = hashlib.sha256(body).hexdigest()
    html = render_html(report, sha256=digest, areas=areas)
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    written["report.html"] = out_dir / "report.html"
    return written
