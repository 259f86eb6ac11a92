"""Which cells of the grid have no value, and why; which values stand out from their neighbours.

A model-set image needs a complete regular n-χ lattice (pdrtpy interpolates and fits on it): the
density and FUV values of the grid must be evenly spaced in log10 (a gap of whole steps is a hole,
not an irregularity), and every cell must hold a value. Outliers are flagged, never dropped: a cell
whose log10 value is more than ``outlier_dex`` from the mean of its neighbours along every axis it
has two neighbours on (a spike, not a steep but smooth gradient).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..states import FAILED_STATES, JobState
from .cube import ABSENT, GridCube

LATTICE_TOLERANCE = 0.05  # of a step: 10^3 and 3.16e3 are half a dex apart
OUTLIER_PREFIXES = ("I_", "Tpeak_", "N_", "surface_")  # positive quantities, compared in log10


class IrregularAxis(ValueError):
    """The axis values are not on one log10 lattice (not even with whole steps missing)."""


@dataclass(frozen=True)
class Lattice:
    log_start: float
    log_step: float  # 1.0 for an axis with one value
    index: tuple[int, ...]  # each value's lattice position
    size: int

    def log_value(self, i: int) -> float:
        return self.log_start + i * self.log_step


def lattice(values: list[float], axis: str) -> Lattice:
    logs = np.log10(np.asarray(values, dtype=float))
    if len(logs) == 1:
        return Lattice(float(logs[0]), 1.0, (0,), 1)
    step = float(np.min(np.diff(logs)))
    position = (logs - logs[0]) / step
    index = np.rint(position).astype(int)
    worst = float(np.max(np.abs(position - index)))
    if worst > LATTICE_TOLERANCE:
        raise IrregularAxis(f"{axis} values {', '.join(f'{v:g}' for v in values)} are not evenly spaced in log10 "
                            f"(steps of {step:.4g} dex, off by up to {worst:.2f} of a step)")
    slope, intercept = np.polyfit(index, logs, 1)  # the best even spacing through all values
    return Lattice(float(intercept), float(slope), tuple(int(i) for i in index), int(index[-1]) + 1)


@dataclass(frozen=True)
class Plane:
    """One n-χ plane: fixed values of the other dimensions."""

    index: tuple[int | slice, ...]  # into the cube's dims; slices for density and fuv
    labels: dict[str, Any]  # every non-plane axis (fixed ones too) -> its value here

    def title(self) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.labels.items())


def planes(cube: GridCube) -> Iterator[Plane]:
    other = [d for d in cube.dims if d not in ("density", "fuv")]
    for combo in itertools.product(*(range(len(cube.axis_values[d])) for d in other)):
        chosen = dict(zip(other, combo, strict=True))
        index = tuple(chosen[d] if d in chosen else slice(None) for d in cube.dims)
        labels = {a: (cube.axis_values[a][chosen[a]] if a in chosen else values[0])
                  for a, values in cube.axis_values.items() if a not in ("density", "fuv")}
        yield Plane(index, labels)


def plane_matrix(cube: GridCube, array: np.ndarray, plane: Plane) -> np.ndarray:
    """(rows = FUV ascending, columns = density ascending), as pdrtpy's images are laid out."""
    sub = array[plane.index]
    remaining = [d for d in cube.dims if d in ("density", "fuv")]
    return sub.T if remaining == ["density", "fuv"] else sub


@dataclass
class Coverage:
    cells: int
    jobs: int
    archived: int
    missing: list[dict[str, Any]] = field(default_factory=list)  # lattice cells no job sits on
    failed: list[dict[str, Any]] = field(default_factory=list)
    not_archived: list[dict[str, Any]] = field(default_factory=list)  # pending, running, computed
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    irregular: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed or self.not_archived or self.unreadable or self.irregular)

    def to_json(self) -> dict[str, Any]:
        return {"complete": self.complete, "cells": self.cells, "jobs": self.jobs, "archived": self.archived,
                "missing": self.missing, "failed": self.failed, "not_archived": self.not_archived,
                "unreadable": self.unreadable, "outliers": self.outliers, "irregular": self.irregular}


def _cell_axes(cube: GridCube, index: tuple[int, ...]) -> dict[str, Any]:
    return {**cube.fixed, **{d: cube.axis_values[d][i] for d, i in zip(cube.dims, index, strict=True)}}


def coverage(cube: GridCube, outlier_dex: float) -> Coverage:
    result = Coverage(cells=int(np.prod(cube.shape)), jobs=len(cube.jobs),
                      archived=sum(job.archived for job in cube.jobs) - len(cube.unreadable))
    for axis in ("density", "fuv"):
        try:
            lat = lattice(cube.axis_values[axis], axis)
        except IrregularAxis as exc:
            result.irregular.append(str(exc))
            continue
        gaps = sorted(set(range(lat.size)) - set(lat.index))
        if gaps:  # whole steps missing along an axis: every plane has a hole there
            result.missing.extend({axis: round(10 ** lat.log_value(i), 6), "reason": "not in the grid's axis values"}
                                  for i in gaps)
    for index in itertools.product(*(range(n) for n in cube.shape)):
        if cube.state[index] == ABSENT:
            result.missing.append({**_cell_axes(cube, index), "reason": "no job in the ledger"})
    by_name = {job.name: job for job in cube.jobs}
    for job in cube.jobs:
        entry = {"job": job.name, "state": job.state, "reason": job.reason}
        if job.state in FAILED_STATES:
            result.failed.append(entry)
        elif not job.archived:
            result.not_archived.append(entry)
    result.unreadable = [{"job": name, "state": by_name[name].state, "reason": why}
                         for name, why in sorted(cube.unreadable.items())]
    result.outliers = outliers(cube, outlier_dex)
    return result


def outliers(cube: GridCube, dex: float) -> list[dict[str, Any]]:
    found = []
    for key, array in cube.values.items():
        if not key.startswith(OUTLIER_PREFIXES):
            continue
        for plane in planes(cube):
            values = plane_matrix(cube, array, plane)
            names = plane_matrix(cube, cube.names, plane)
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.where(values > 0, np.log10(values), np.nan)
            rows, columns = logs.shape
            for r, c in itertools.product(range(rows), range(columns)):
                residuals = []
                if 0 < r < rows - 1:
                    residuals.append(logs[r, c] - 0.5 * (logs[r - 1, c] + logs[r + 1, c]))
                if 0 < c < columns - 1:
                    residuals.append(logs[r, c] - 0.5 * (logs[r, c - 1] + logs[r, c + 1]))
                finite = [x for x in residuals if math.isfinite(x)]
                if finite and len(finite) == len(residuals) and min(abs(x) for x in finite) > dex:
                    found.append({"job": names[r, c], "quantity": key,
                                  "dex_from_neighbours": round(float(min(finite, key=abs)), 3)})
    return found


def hole_names(cube: GridCube, matrix: np.ndarray, plane: Plane) -> list[str]:
    """The cells of one image without a value: the job's name and why, or the cell's axes."""
    names = plane_matrix(cube, cube.names, plane)
    states = plane_matrix(cube, cube.state, plane)
    holes = []
    for r, c in zip(*np.nonzero(~np.isfinite(matrix)), strict=True):
        n, chi = cube.axis_values["density"][c], cube.axis_values["fuv"][r]
        name = names[r, c]
        why = states[r, c] if states[r, c] != JobState.ARCHIVED else cube.unreadable.get(name, "no value")
        holes.append(f"{name or 'no job'} (n={n:g}, FUV={chi:g}: {why[:80]})")
    return holes
