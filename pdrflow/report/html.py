"""One self-contained HTML page: the PNGs inlined as base64 data URIs, and the plotted numbers as tables.

Nothing is loaded from elsewhere (no external src, href, fonts or scripts): the page can be mailed
or opened on a laptop without the archive."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from ..results import JobRecord
from .collect import STANDIN_MARK, GridData, Quantity
from .planes import Plane, planes

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; }
td.missing { color: #999; background: repeating-linear-gradient(45deg, #fff, #fff 4px, #eee 4px, #eee 8px); }
.note { color: #8a5a00; }
.standin { color: #b00000; font-weight: bold; font-size: 1.2em; }
"""


def format_number(value: float) -> str:
    """How every plotted number is written in the page (4 significant digits)."""
    return f"{value:.4g}"


@dataclass(frozen=True)
class Section:
    title: str
    image: Path
    tables: str  # HTML
    description: str = ""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def plane_table(plane: Plane, cell: Callable[[JobRecord], tuple[str, bool]]) -> str:
    """Rows χ (high first, as in the maps), columns n; ``cell`` gives (text, missing)."""
    head = "".join(f"<th>n = {d:.4g}</th>" for d in plane.densities)
    rows = []
    for row in reversed(range(len(plane.fuvs))):
        cells = []
        for column in range(len(plane.densities)):
            job = plane.cells.get((row, column))
            text, missing = ("—", True) if job is None else cell(job)
            title = f' title="{escape(job.name)}"' if job is not None else ""
            cells.append(f'<td{title}{" class=missing" if missing else ""}>{escape(text)}</td>')
        rows.append(f"<tr><th>χ = {plane.fuvs[row]:.4g}</th>{''.join(cells)}</tr>")
    return (f"<p><b>{escape(plane.title)}</b></p><table><tr><th>χ \\ n [cm⁻³]</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def state_tables(data: GridData) -> str:
    return "".join(plane_table(p, lambda job: (job.state, not job.archived)) for p in planes(data.jobs))


def quantity_tables(data: GridData, quantity: Quantity) -> str:
    def cell(job: JobRecord) -> tuple[str, bool]:
        value = data.value(quantity.key, job.name)
        if math.isfinite(value):
            return format_number(value), False
        return data.missing_reason(quantity.key, job), True

    return f"<p>unit: {escape(quantity.unit)}</p>" + "".join(plane_table(p, cell) for p in planes(data.jobs))


def write_html(path: Path, data: GridData, sections: Sequence[Section]) -> Path:
    counts: dict[str, int] = {}
    for job in data.jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    summary = ", ".join(f"{state}: {count}" for state, count in sorted(counts.items()))
    notes = "".join(f'<li class="note">{escape(note)}</li>' for note in data.notes)
    model_notes = "".join(
        f"<li><b>{escape(name)}</b>: {escape('; '.join(dict.fromkeys(items)))}</li>"
        for name, items in sorted(data.model_notes.items()) if items
    )
    intro = (f"<p>{len(data.jobs)} jobs ({escape(summary)}). Science maps are read from the archived outputs; "
             "hatched cells have no value (the job is not archived, or its outputs lack what the map needs). "
             f"Written {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.</p>")
    title = f"pdrflow report — grid {escape(data.grid)}" + (f" ({STANDIN_MARK})" if data.standin else "")
    body = [f"<h1>{title}</h1>", intro]
    if data.standin:
        body.insert(1, f'<p class="standin">{STANDIN_MARK}: these numbers were made by pdrflow\'s stand-in '
                       "programs, for testing; they are not KOSMA-tau models.</p>")
    if notes:
        body.append(f"<h2>Notes</h2><ul>{notes}</ul>")
    for section in sections:
        body.append(f"<h2>{escape(section.title)}</h2>")
        if section.description:
            body.append(f"<p>{escape(section.description)}</p>")
        body.append(f'<img alt="{escape(section.title)}" src="{data_uri(section.image)}">')
        body.append(section.tables)
    if model_notes:
        body.append(f"<h2>Per-model notes</h2><ul>{model_notes}</ul>")
    mark = f" ({STANDIN_MARK})" if data.standin else ""
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>pdrflow report: {escape(data.grid)}{mark}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    path.write_text(page, encoding="utf-8")
    return path
