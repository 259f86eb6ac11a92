"""Maps of one science quantity across the n–χ plane, one panel per facet.

Cells without a value are hatched and say why (the job's state, or "n/a" for an archived model
lacking what the quantity needs), so a missing model never looks like a small number."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Rectangle

from .collect import GridData, Quantity
from .gridmap import mark_standin
from .planes import centre, facet_figure, planes, style_axes

HATCH_COLOUR = "0.55"


def colour_norm(values: np.ndarray, log: bool) -> Normalize:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return Normalize(0.0, 1.0)
    if log and np.all(finite > 0):
        low, high = float(finite.min()), float(finite.max())
        return LogNorm(low / 1.5, high * 1.5) if low == high else LogNorm(low, high)
    low, high = float(finite.min()), float(finite.max())
    return Normalize(low - 0.5, high + 0.5) if low == high else Normalize(low, high)


def plot_quantity(data: GridData, quantity: Quantity, path: Path) -> Path:
    grid_planes = planes(data.jobs)
    figure, axes = facet_figure(max(len(grid_planes), 1))
    every = np.array([data.value(quantity.key, job.name) for job in data.jobs], dtype=float)
    norm = colour_norm(every, quantity.log)
    mesh = None
    for ax, plane in zip(axes, grid_planes, strict=False):
        x, y = style_axes(ax, plane)
        values = plane.matrix(lambda job: data.value(quantity.key, job.name))
        mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(values), cmap="viridis", norm=norm, edgecolors="white",
                             linewidth=1.0)
        for (row, column), job in plane.cells.items():
            value = values[row, column]
            if math.isfinite(value):
                if plane.annotate:
                    level = norm(value)
                    ax.text(*centre(x, y, row, column), f"{value:.3g}", ha="center", va="center", fontsize=8,
                            color="black" if np.ma.filled(level, 0.0) > 0.6 else "white")
                continue
            ax.add_patch(Rectangle((x[column], y[row]), x[column + 1] - x[column], y[row + 1] - y[row],
                                   fill=False, hatch="///", edgecolor=HATCH_COLOUR, linewidth=0.0))
            if plane.annotate:
                why = data.missing_reason(quantity.key, job).replace("_", "\n").replace(" ", "\n")
                ax.text(*centre(x, y, row, column), why, ha="center", va="center", fontsize=7, color="0.25",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
    if mesh is not None:
        figure.colorbar(mesh, ax=axes, label=quantity.label, shrink=0.9)
    figure.suptitle(f"{quantity.title} — grid {data.grid}", fontsize=11)
    if data.standin:
        mark_standin(figure)
    figure.savefig(path, dpi=110)
    return path
