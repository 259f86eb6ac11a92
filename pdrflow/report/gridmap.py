"""The grid map of job states over density × FUV field, one panel per facet, from the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..results import JobRecord
from ..states import STATE_COLOURS, STATE_SHORT, STATES, JobState
from .collect import STANDIN_MARK
from .planes import centre, facet_figure, planes, style_axes

_DARK = frozenset({JobState.ARCHIVED, JobState.FAILED_MODEL})  # white labels read better on these colours


def mark_standin(figure: Figure) -> None:
    """Across the figure, where no crop or caption loses it: the numbers are not KOSMA-tau's."""
    figure.text(0.5, 0.5, STANDIN_MARK, ha="center", va="center", rotation=20, fontsize=28, color="red", alpha=0.25,
                zorder=10)
    figure.text(0.005, 0.005, STANDIN_MARK, ha="left", va="bottom", fontsize=9, color="red")


def plot_state_map(jobs: Sequence[JobRecord], path: Path, title: str, standin: bool = False) -> Path:
    grid_planes = planes(jobs)
    figure, axes = facet_figure(max(len(grid_planes), 1))
    colours = ListedColormap([STATE_COLOURS[s] for s in STATES])
    norm = BoundaryNorm(np.arange(len(STATES) + 1) - 0.5, len(STATES))
    for ax, plane in zip(axes, grid_planes, strict=False):
        x, y = style_axes(ax, plane)
        index = plane.matrix(lambda job: float(STATES.index(job.state)))
        ax.pcolormesh(x, y, np.ma.masked_invalid(index), cmap=colours, norm=norm, edgecolors="white",
                      linewidth=1.0)
        if plane.annotate:
            for (row, column), job in plane.cells.items():
                ax.text(*centre(x, y, row, column), STATE_SHORT[JobState(job.state)], ha="center", va="center", fontsize=8,
                        color="white" if job.state in _DARK else "black")
    present = [s for s in STATES if any(job.state == s for job in jobs)]
    counts = {s: sum(job.state == s for job in jobs) for s in present}
    figure.legend(handles=[Patch(color=STATE_COLOURS[s], label=f"{s} ({counts[s]})") for s in present],
                  loc="outside right upper", title="job state")
    figure.suptitle(title)
    if standin:
        mark_standin(figure)
    figure.savefig(path, dpi=110)
    return path
