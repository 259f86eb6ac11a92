"""``pdrflow report``: PNG maps of a grid and one self-contained HTML page, from the ledger and the archive.

- ``states.png``: job states over density × FUV field (a panel per metallicity, mass and varied
  parameters), from the ledger;
- one PNG per science quantity, read from the ARCHIVED outputs (never scratch): surface gas
  temperature, A_V of the H/H2, C+/C and C/CO transitions, and the standard line intensities the
  onion output has ([CII] 158 µm, [CI] 609/370 µm, CO, [OI], 13CO), the CO and [CI] lines also in
  K km/s, and the line ratios of the config's ``results.report_ratios``;
- every figure and the page marked "stand-in, not KOSMA-tau" when the stand-in made the data;
- ``report.html`` with every PNG inlined and the plotted numbers as tables; ``values.json`` with
  the same numbers for scripts.

Nothing is re-run; models not archived are hatched; a missing species is a note, not a crash.
Modules: collect.py (the numbers), planes.py (n–χ planes, axes), gridmap.py, science.py, html.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..results import open_archive
from .collect import GridData, Quantity, collect
from .gridmap import plot_state_map
from .html import Section, quantity_tables, state_tables, write_html
from .science import plot_quantity

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    html: Path
    images: tuple[Path, ...]  # states.png first, then one per quantity
    values_json: Path
    states: Mapping[str, str]  # job name → state
    quantities: tuple[Quantity, ...]
    values: Mapping[str, Mapping[str, float]]  # quantity key → job name → value (NaN: no value)
    notes: tuple[str, ...]

    @property
    def files(self) -> list[Path]:
        return [self.html, *self.images, self.values_json]


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("+", "plus").replace(":", "_")) + ".png"


def _values_document(data: GridData) -> dict[str, object]:
    return {
        "grid": data.grid,
        "standin": data.standin,
        "jobs": [{"name": j.name, "state": j.state, "metallicity": j.metallicity, "density": j.density,
                  "mass": j.mass, "fuv": j.fuv, "varied": dict(j.varied)} for j in data.jobs],
        "quantities": [{"key": q.key, "title": q.title, "unit": q.unit} for q in data.quantities],
        # JSON has no NaN: a missing value is null
        "values": {key: {name: (v if math.isfinite(v) else None) for name, v in column.items()}
                   for key, column in data.values.items()},
        "notes": data.notes,
        "model_notes": data.model_notes,
    }


def write_report(config: Config, out_dir: Path) -> ReportResult:
    """Read the grid's ledger and archive, write the PNGs, report.html and values.json into ``out_dir``.

    Raises pdrflow.results.ResultsError when there is no ledger or grid to report on."""
    with open_archive(config) as reader:
        data = collect(reader)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once there is something to write
    states_png = plot_state_map(data.jobs, out_dir / "states.png", f"Job states — grid {data.grid}", data.standin)
    sections = [Section("Job states", states_png, state_tables(data), "From the ledger.")]
    for quantity in data.quantities:
        png = plot_quantity(data, quantity, out_dir / _file_name(quantity.key))
        sections.append(Section(quantity.title, png, quantity_tables(data, quantity)))
    html = write_html(out_dir / "report.html", data, sections)
    values_json = out_dir / "values.json"
    values_json.write_text(json.dumps(_values_document(data), indent=1, ensure_ascii=False))
    return ReportResult(out_dir, html, tuple(s.image for s in sections), values_json,
                        {job.name: job.state for job in data.jobs}, tuple(data.quantities),
                        data.values, tuple(data.notes))
