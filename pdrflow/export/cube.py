"""The grid's scalars on its axes: one array per quantity over (metallicity, density, mass, FUV, varied ...),
read from the archive through :class:`pdrflow.results.ArchiveReader`, and the ledger's provenance summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ledger.queries import job_provenances
from ..results import ArchiveReader, JobRecord, ScalarInfo, model_scalars
from ..states import JobState

AXES = ("metallicity", "density", "mass", "fuv")  # always in this order, varied parameters after them
PLANE_AXES = ("density", "fuv")  # always dimensions: every n-χ plane is a model-set image
ABSENT = "absent"  # the state of a lattice cell no job of the ledger sits on


@dataclass
class GridCube:
    grid: str
    axis_values: dict[str, list[Any]]  # every axis (fixed ones too) -> sorted distinct values
    dims: tuple[str, ...]  # the axes with more than one value, plus density and fuv
    jobs: list[JobRecord]
    cell: dict[str, tuple[int, ...]]  # job name -> index into the dims
    state: np.ndarray  # object: job state per cell, ABSENT where no job
    names: np.ndarray  # object: job name per cell, "" where no job
    values: dict[str, np.ndarray] = field(default_factory=dict)  # scalar key -> float array over dims
    info: dict[str, ScalarInfo] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    model_notes: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # job -> why

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.axis_values[d]) for d in self.dims)

    @property
    def fixed(self) -> dict[str, Any]:
        return {a: v[0] for a, v in self.axis_values.items() if a not in self.dims}

    def value(self, key: str) -> np.ndarray:
        """The array of a quantity; NaN everywhere for one no model has."""
        return self.values.get(key, np.full(self.shape, np.nan))

    def line_ids(self) -> list[str]:
        return [key[2:] for key in self.values if key.startswith("I_")]


def axis_of(job: JobRecord, axis: str) -> Any:
    return getattr(job, axis) if axis in AXES else job.varied.get(axis)


def _sortable(values: set[Any]) -> list[Any]:
    return sorted(values, key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0.0, str(v)))


def empty_cube(grid: str, jobs: list[JobRecord]) -> GridCube:
    varied = sorted({name for job in jobs for name in job.varied})
    axis_values = {axis: _sortable({axis_of(job, axis) for job in jobs}) for axis in (*AXES, *varied)}
    dims = tuple(a for a in axis_values if len(axis_values[a]) > 1 or a in PLANE_AXES)
    position = {a: {v: i for i, v in enumerate(axis_values[a])} for a in dims}
    shape = tuple(len(axis_values[d]) for d in dims)
    state = np.full(shape, ABSENT, dtype=object)
    names = np.full(shape, "", dtype=object)
    cell = {}
    for job in jobs:
        index = tuple(position[a][axis_of(job, a)] for a in dims)
        cell[job.name] = index
        state[index], names[index] = job.state, job.name
    return GridCube(grid, axis_values, dims, jobs, cell, state, names)


def collect_cube(reader: ArchiveReader) -> GridCube:
    """Every archived model read once (several at once, sha256-checked), reduced to its scalars at once."""
    cube = empty_cube(reader.grid, reader.jobs())
    for job, read in reader.many_model_outputs(job for job in cube.jobs if job.archived):
        if isinstance(read, Exception):
            cube.unreadable[job.name] = str(read)
            cube.notes.append(f"{job.name}: archived but unreadable, left NaN: {read}")
            continue
        cube.model_notes[job.name] = list(read.notes)
        index = cube.cell[job.name]
        for key, (value, info) in model_scalars(read).items():
            array = cube.values.get(key)
            if array is None:
                array = cube.values[key] = np.full(cube.shape, np.nan)
                cube.info[key] = info
            array[index] = value
    return cube


def provenance_summary(reader: ArchiveReader) -> dict[str, Any]:
    """What produced the grid, from the ledger: executables (sha256, revision) with how many models each
    made, stand-in or not, hosts, the time span of the runs, and the job states."""
    executables: Counter[tuple[str, str, str, str]] = Counter()
    chem_rates: Counter[tuple[str, str]] = Counter()
    standin: Counter[str] = Counter()
    hosts: set[str] = set()
    started: list[str] = []
    ended: list[str] = []
    states: Counter[str] = Counter()
    for state, provenance in job_provenances(reader.ledger, reader.grid):
        states[state] += 1
        if not provenance or state != JobState.ARCHIVED:
            continue
        for role in ("pdr_executable", "onion_executable"):
            exe = provenance.get(role) or {}
            executables[(role, str(exe.get("sha256")), str(exe.get("revision")), str(exe.get("compiled")))] += 1
        rates = provenance.get("chem_rates") or {}
        chem_rates[(str(rates.get("file")), str(rates.get("sha256")))] += 1
        standin[str(bool(provenance.get("standin")))] += 1
        if provenance.get("host"):
            hosts.add(str(provenance["host"]))
        if provenance.get("started"):
            started.append(str(provenance["started"]))
        if provenance.get("ended"):
            ended.append(str(provenance["ended"]))
    return {
        "job_states": dict(sorted(states.items())),
        "executables": [{"role": role, "sha256": sha, "revision": revision, "compiled": compiled, "models": count}
                        for (role, sha, revision, compiled), count in sorted(executables.items())],
        "chem_rates": [{"file": name, "sha256": sha, "models": count} for (name, sha), count in sorted(chem_rates.items())],
        "standin_models": standin.get("True", 0),
        "kosma_tau_models": standin.get("False", 0),
        "hosts": len(hosts),
        "first_run_started": min(started) if started else None,
        "last_run_ended": max(ended) if ended else None,
    }
