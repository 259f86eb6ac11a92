"""Jobs arranged on density × FUV planes, one plane per facet (metallicity, mass, varied parameters),
and the shared look of every map: log axes with units, cell edges halfway in log between values."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..results import JobRecord
from .collect import facet_key, facet_title

DENSITY_LABEL = "surface density n [cm\u207b\u00b3]"  # plain text: the layout measures it on every panel
FUV_LABEL = "FUV field \u03c7 [Draine]"
ANNOTATE_MAX_CELLS = 64  # beyond this, numbers in the cells are unreadable: the tables have them


@dataclass(frozen=True)
class Plane:
    key: tuple[Any, ...]
    title: str
    densities: tuple[float, ...]  # ascending: columns
    fuvs: tuple[float, ...]  # ascending: rows
    cells: dict[tuple[int, int], JobRecord]  # (row, column) → job

    def matrix(self, value_of: Callable[[JobRecord], float]) -> np.ndarray:
        """(rows = χ, columns = n), NaN where the plane has no job."""
        values = np.full((len(self.fuvs), len(self.densities)), np.nan)
        for (row, column), job in self.cells.items():
            values[row, column] = value_of(job)
        return values

    @property
    def annotate(self) -> bool:
        return len(self.densities) * len(self.fuvs) <= ANNOTATE_MAX_CELLS


def planes(jobs: Sequence[JobRecord]) -> list[Plane]:
    groups: dict[tuple[Any, ...], list[JobRecord]] = {}
    for job in jobs:
        groups.setdefault(facet_key(job), []).append(job)
    result = []
    for key in sorted(groups, key=repr):
        members = groups[key]
        densities = tuple(sorted({j.density for j in members}))
        fuvs = tuple(sorted({j.fuv for j in members}))
        cells = {(fuvs.index(j.fuv), densities.index(j.density)): j for j in members}
        result.append(Plane(key, facet_title(key), densities, fuvs, cells))
    return result


def edges(values: Sequence[float]) -> np.ndarray:
    """Cell boundaries, geometric means between neighbours; half a step (or ×/÷ √10) at the ends."""
    logs = np.log10(np.asarray(values, dtype=float))
    if len(logs) == 1:
        return np.asarray(10.0 ** np.array([logs[0] - 0.5, logs[0] + 0.5]))
    middle = 0.5 * (logs[1:] + logs[:-1])
    first, last = logs[0] - (middle[0] - logs[0]), logs[-1] + (logs[-1] - middle[-1])
    return np.asarray(10.0 ** np.concatenate([[first], middle, [last]]))


def facet_figure(count: int) -> tuple[Figure, list[Axes]]:
    """A figure with one panel per plane (no pyplot: no global figure registry)."""
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(4.6 * columns + 1.2, 3.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for spare in flat[count:]:
        spare.set_visible(False)
    return figure, flat[:count]


def style_axes(ax: Axes, plane: Plane) -> tuple[np.ndarray, np.ndarray]:
    """Log axes, labels with units, ticks at the grid values; returns the cell edges (x, y)."""
    x, y = edges(plane.densities), edges(plane.fuvs)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_xlabel(DENSITY_LABEL)
    ax.set_ylabel(FUV_LABEL)
    ax.set_title(plane.title, fontsize=9)
    ax.set_xticks(plane.densities, [tick_label(v) for v in plane.densities], minor=False)
    ax.set_yticks(plane.fuvs, [tick_label(v) for v in plane.fuvs], minor=False)
    ax.minorticks_off()
    return x, y


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def tick_label(value: float) -> str:
    """10^k as a power of ten, anything else with 3 significant digits. Unicode superscripts, not mathtext:
    the layout measures every tick label of every map, and parsing mathtext was a fifth of a report's time."""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) < 1e-9:
        return "10" + f"{round(exponent)}".translate(_SUPERSCRIPT)
    return f"{value:.3g}"


def centre(x: np.ndarray, y: np.ndarray, row: int, column: int) -> tuple[float, float]:
    return float(math.sqrt(x[column] * x[column + 1])), float(math.sqrt(y[row] * y[row + 1]))
