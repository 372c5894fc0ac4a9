"""CSV downloads (the auditor's search export, the statistics' exports): UTF-8 with a byte-order mark, and no cell a
spreadsheet would run as a formula.

The BOM (EF BB BF) is there for Excel: without it, Excel on a Chinese Windows opens a .csv as GBK and shows UTF-8
Chinese as mojibake; with it, Excel (and LibreOffice, Numbers, Python's utf-8-sig) reads UTF-8. Quoting, commas,
quotes and line breaks inside a cell are the csv module's (RFC 4180).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from fastapi.responses import Response

BOM = "\ufeff"


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, or a tab or CR before one) is prefixed with
    ' (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    return out.getvalue()


def csv_response(columns: Sequence[str], rows: Iterable[Sequence[Any]], name: str) -> Response:
    """A download named `jingbao-<name>-<now>.csv`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Response(
        csv_text(columns, rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="jingbao-{name}-{stamp}.csv"'},
    )
