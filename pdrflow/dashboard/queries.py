"""Read-only ledger queries for the dashboard page: a few aggregated SELECTs, never one row per job.

The page must stay fast for 100k-job grids, so everything is a GROUP BY: counts by state, counts
by facet (metallicity × mass) and state, and the density × FUV cells of the facets on show. At
most ``MAX_CELLS`` cells go to the browser; a grid with more density × FUV points per facet is
binned (neighbouring axis values merged into one cell).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, func, or_, select
from sqlalchemy.pool import NullPool

from ..config import DatabaseConfig
from ..ledger.schema import Attempt, AttemptKind, AttemptOutcome, Grid, Job
from ..states import STATES, JobState
from ..status import sqlite_path
from .eta import mean_cost

# The order that decides a mixed cell's colour: the first state present wins,
# so a cell shows its most urgent job (a failure) before its most finished one.
CELL_PRIORITY: tuple[JobState, ...] = (JobState.FAILED_MODEL, JobState.FAILED_STORAGE, JobState.RUNNING,
                                        JobState.COMPUTED, JobState.PENDING, JobState.ARCHIVED)
MAX_CELLS = 20_000  # cells sent to (and drawn by) the browser per refresh
MAX_FACETS = 24  # facets per page
RECENT_ATTEMPTS = 200  # the ETA's sample: the latest successful runs and archivals
# what a grid still has to do (failed_model waits for `pdrflow resubmit`)
REMAINING_STATES = (JobState.PENDING, JobState.RUNNING, JobState.COMPUTED, JobState.FAILED_STORAGE)


def read_only_engine(database: DatabaseConfig) -> Engine:
    """An engine that cannot write the ledger: the dashboard only ever looks."""
    path = sqlite_path(database.url)
    if path is not None:
        uri = f"{path.resolve().as_uri()}?mode=ro"  # never creates a missing ledger file

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
            connection.execute("PRAGMA query_only=ON")
            return connection

        # NullPool: a fresh connection per snapshot, so a replaced ledger file is never read stale
        return create_engine("sqlite://", creator=connect, poolclass=NullPool)
    url = database.sqlalchemy_url()
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {"connect_timeout": 10} if backend in ("postgresql", "mysql", "mariadb") else {}
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_recycle=3600,
                           connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        # A session-level guard on top of the read-only SELECTs, in case a bug ever tried a write.
        statement = {
            "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "mysql": "SET SESSION TRANSACTION READ ONLY",
            "mariadb": "SET SESSION TRANSACTION READ ONLY",
        }.get(backend)
        if statement is None:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()

    return engine


def axis_label(value: float) -> str:
    """Short labels for axis ticks: 1000.0 → "1e3", 0.5 → "0.5"."""
    text = f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


@dataclass(frozen=True)
class _Bins:
    """Axis values → cell index; several neighbouring values share a cell when the axis is binned."""

    values: tuple[float, ...]
    stride: int

    @property
    def size(self) -> int:
        return math.ceil(len(self.values) / self.stride) if self.values else 0

    def index(self) -> dict[float, int]:
        return {value: i // self.stride for i, value in enumerate(self.values)}

    def labels(self) -> list[str]:
        labels = []
        for start in range(0, len(self.values), self.stride):
            chunk = self.values[start : start + self.stride]
            first, last = axis_label(chunk[0]), axis_label(chunk[-1])
            labels.append(first if first == last else f"{first}–{last}")
        return labels


def _bins(density: Sequence[float], fuv: Sequence[float], max_cells: int) -> tuple[_Bins, _Bins]:
    stride = 1
    while math.ceil(len(density) / stride) * math.ceil(len(fuv) / stride) > max_cells:
        stride += 1
    return _Bins(tuple(density), stride), _Bins(tuple(fuv), stride)


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(STATES, 0)


def cell_state(counts: Mapping[str, int]) -> str:
    """The state a cell is drawn in: the first of ``CELL_PRIORITY`` that any of its jobs is in."""
    for state in CELL_PRIORITY:
        if counts.get(state):
            return state
    return "empty"


def _facet_key(metallicity: float, mass: float) -> tuple[float, float]:
    return (metallicity, mass)


def snapshot(engine: Engine, grid: str, page: int = 0, *, max_cells: int = MAX_CELLS,
             max_facets: int = MAX_FACETS) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data. ``page``: which slice of the facets to show."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with engine.connect() as connection:
        grid_id = connection.scalar(select(Grid.id).where(Grid.name == grid))
        if grid_id is None:
            return {"grid": grid, "found": False, "updated": now, "total": 0, "counts": _zero_counts(),
                    "facets": [], "page": 0, "pages": 0, "facet_total": 0}
        of_grid = Job.grid_id == grid_id
        # One scan gives both the facets and the grid's counts by state.
        counts = _zero_counts()
        facet_counts: dict[tuple[float, float], dict[str, int]] = {}
        for metallicity, mass, state, count in connection.execute(
            select(Job.metallicity, Job.mass, Job.state, func.count()).where(of_grid)
            .group_by(Job.metallicity, Job.mass, Job.state)
        ):
            facet_counts.setdefault(_facet_key(metallicity, mass), _zero_counts())[state] = count
            counts[state] = counts.get(state, 0) + count
        density = sorted(connection.scalars(select(Job.density).where(of_grid).distinct()))
        fuv = sorted(connection.scalars(select(Job.fuv).where(of_grid).distinct()))
        density_bins, fuv_bins = _bins(density, fuv, max_cells)
        cells_per_facet = max(1, density_bins.size * fuv_bins.size)
        per_page = max(1, min(max_facets, max_cells // cells_per_facet))
        keys = sorted(facet_counts)
        pages = max(1, math.ceil(len(keys) / per_page))
        page = min(max(page, 0), pages - 1)
        shown = keys[page * per_page : (page + 1) * per_page]
        cells: dict[tuple[float, float], dict[int, dict[str, int]]] = {key: {} for key in shown}
        if shown:
            d_index, f_index = density_bins.index(), fuv_bins.index()
            rows = connection.execute(
                select(Job.metallicity, Job.mass, Job.density, Job.fuv, Job.state, func.count())
                .where(of_grid, or_(*(and_(Job.metallicity == z, Job.mass == m) for z, m in shown)))
                .group_by(Job.metallicity, Job.mass, Job.density, Job.fuv, Job.state)
            )
            for metallicity, mass, d, f, state, count in rows:
                facet = cells.get(_facet_key(metallicity, mass))
                if facet is None:
                    continue
                # row-major, FUV rows × density columns
                flat = f_index[f] * density_bins.size + d_index[d]
                cell = facet.setdefault(flat, {})
                cell[state] = cell.get(state, 0) + count
        durations = {kind.value: _recent_durations(connection, grid_id, kind)
                     for kind in (AttemptKind.MODEL, AttemptKind.ARCHIVE)}
    return {
        "grid": grid,
        "found": True,
        "updated": now,
        "total": sum(counts.values()),
        "counts": counts,
        "density": density_bins.labels(),
        "fuv": fuv_bins.labels(),
        "binned": density_bins.stride > 1,
        "page": page,
        "pages": pages,
        "facet_total": len(keys),
        "facets": [_facet_json(key, facet_counts[key], cells[key], density_bins.size * fuv_bins.size)
                   for key in shown],
        # for the ETA (eta.py): mean seconds a model keeps a worker slot, from recent successful attempts
        "model_cost": mean_cost(durations[AttemptKind.MODEL.value], durations[AttemptKind.ARCHIVE.value]),
        "remaining": sum(counts.get(state, 0) for state in REMAINING_STATES),
    }


def _recent_durations(connection: Any, grid_id: int, kind: AttemptKind, limit: int = RECENT_ATTEMPTS) -> list[float]:
    rows = connection.execute(
        select(Attempt.started_at, Attempt.ended_at).join(Job, Job.id == Attempt.job_id)
        .where(Job.grid_id == grid_id, Attempt.kind == kind.value, Attempt.outcome == AttemptOutcome.OK.value,
               Attempt.ended_at.is_not(None))
        .order_by(Attempt.id.desc()).limit(limit)
    )
    return [max(0.0, (ended - started).total_seconds()) for started, ended in rows]


def _facet_json(key: tuple[float, float], counts: Mapping[str, int], cells: Mapping[int, Mapping[str, int]],
                size: int) -> dict[str, Any]:
    metallicity, mass = key
    states: list[str] = ["empty"] * size
    mixed: dict[str, dict[str, int]] = {}  # only cells holding jobs in several states carry counts
    for flat, cell in cells.items():
        states[flat] = cell_state(cell)
        if len(cell) > 1 or sum(cell.values()) > 1:
            mixed[str(flat)] = dict(cell)
    return {
        "metallicity": metallicity,
        "mass": mass,
        "label": f"Z = {axis_label(metallicity)} Z☉, M = {axis_label(mass)} M☉",
        "counts": dict(counts),
        "cells": _run_length(states),
        "mixed": mixed,
    }


def _run_length(states: Iterable[str]) -> list[list[Any]]:
    """[[state, repeat], ...]: a finished 100×100 facet is one pair instead of 10 000 strings."""
    runs: list[list[Any]] = []
    for state in states:
        if runs and runs[-1][0] == state:
            runs[-1][1] += 1
        else:
            runs.append([state, 1])
    return runs
