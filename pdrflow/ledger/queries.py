"""Read-only questions about a grid that the views ask (report, export, results), in one place.

``pdrflow status`` keeps its own light reader (``status.py``: the standard library's sqlite3 for
SQLite, no SQLAlchemy import) and the dashboard its read-only engine (``dashboard/queries.py``);
everything holding a :class:`Ledger` asks here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from ..states import JobState
from .ledger import Ledger
from .schema import Grid, Job


@dataclass(frozen=True)
class JobRecord:
    """A job of the grid as the ledger knows it (axes in physical units)."""

    name: str
    state: str  # a pdrflow.states.JobState value
    reason: str | None
    metallicity: float  # Z / Z_sun
    density: float  # surface H density [cm^-3]
    mass: float  # clump mass [M_sun]
    fuv: float  # FUV field [Draine units]
    varied: Mapping[str, Any] = field(default_factory=dict)  # parameters varied besides the axes

    @property
    def archived(self) -> bool:
        return self.state == JobState.ARCHIVED


def grid_jobs(ledger: Ledger, grid: str) -> list[JobRecord]:
    """Every job of the grid with its axes (the Ledger's JobRef has no axes)."""
    query = (
        select(Job.name, Job.state, Job.reason, Job.metallicity, Job.density, Job.mass, Job.fuv, Job.varied)
        .join(Grid, Job.grid_id == Grid.id).where(Grid.name == grid).order_by(Job.id)
    )
    with ledger.reading() as session:
        return [JobRecord(r.name, r.state, r.reason, r.metallicity, r.density, r.mass, r.fuv, dict(r.varied or {}))
                for r in session.execute(query)]


def job_provenances(ledger: Ledger, grid: str) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(state, provenance) of every job of the grid."""
    query = select(Job.state, Job.provenance).join(Grid, Job.grid_id == Grid.id).where(Grid.name == grid)
    with ledger.reading() as session:
        for state, provenance in session.execute(query):
            if isinstance(provenance, str):  # a driver handing JSON back as text
                provenance = json.loads(provenance)
            yield state, provenance
