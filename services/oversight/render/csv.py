"""One table as CSV bytes: a header row, then the rows (empty cell for a missing value).

The definition and the denominator travel in the JSON and the HTML; a CSV stays a plain
table that a spreadsheet opens as is."""

from __future__ import annotations

import csv
import io
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def table_csv(table: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table["columns"])
    for row in table["rows"]:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue().encode()
