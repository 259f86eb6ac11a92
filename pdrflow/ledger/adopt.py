"""Taking over models another tool computed and archived (``pdrflow migrate``).

Adoption is a registration, not a run: a model whose archived files were all found and
verified enters the ledger ``archived`` directly, with its files (re-hashed), the other
tool's provenance and one ``adopt`` attempt. Nothing walks the run's state machine with
invented attempts. A model that cannot be adopted enters ``pending`` with the reason, and
every file already at one of its archive paths is recorded as a ``PreexistingFile`` so the
archival of its rerun moves them aside instead of refusing them.

Idempotent: a job already archived is left alone; a pending job gets its file records
refreshed, never duplicated. One short transaction per model.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from ..errors import LedgerError
from ..states import JobState
from .ledger import Ledger
from .retries import _transient_db_errors
from .schema import (
    ArchivedFile,
    Attempt,
    AttemptKind,
    AttemptOutcome,
    Grid,
    Job,
    Model,
    PreexistingFile,
    utcnow,
)

if TYPE_CHECKING:
    from ..grid import ModelSpec


@dataclass(frozen=True)
class FoundFile:
    """A file at an archive path: what was measured, and what the other tool recorded for it."""

    path: str  # archive-relative
    size: int
    sha256: str
    recorded_sha256: str | None = None


@dataclass(frozen=True)
class Adoption:
    spec: ModelSpec
    files: Sequence[FoundFile]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class Leftover:
    spec: ModelSpec
    reason: str
    found: Sequence[FoundFile]  # files already at its archive paths
    provenance: dict[str, Any] | None = None


@dataclass
class AdoptionResult:
    adopted: list[str] = field(default_factory=list)  # newly archived by this call
    already_archived: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # registered or kept pending, files recorded
    untouched: list[tuple[str, str]] = field(default_factory=list)  # (name, state): pdrflow has worked on it


def _grid(session: Session, name: str) -> Grid:
    grid = session.scalar(select(Grid).where(Grid.name == name))
    if grid is None:
        grid = Grid(name=name)
        session.add(grid)
        session.flush()
    return grid


def _model_id(session: Session, model_hash: str) -> int:
    model_id = session.scalar(select(Model.id).where(Model.model_hash == model_hash))
    if model_id is None:
        model = Model(model_hash=model_hash)
        session.add(model)
        session.flush()
        model_id = model.id
    return model_id


def _new_job(session: Session, grid: Grid, spec: ModelSpec, state: JobState, reason: str | None,
             provenance: dict[str, Any] | None) -> Job:
    job = Job(grid_id=grid.id, model_id=_model_id(session, spec.model_hash), name=spec.name,
              metallicity=spec.axes["metallicity"], density=spec.axes["density"], mass=spec.axes["mass"],
              fuv=spec.axes["fuv"], varied=dict(spec.varied) or None, state=state.value, reason=reason,
              provenance=provenance)
    session.add(job)
    session.flush()
    return job


def _existing(session: Session, grid: Grid, spec: ModelSpec) -> Job | None:
    job = session.scalar(select(Job).where(Job.grid_id == grid.id, Job.name == spec.name).with_for_update())
    if job is not None and job.model.model_hash != spec.model_hash:
        # The same refusal as Ledger.register_grid: two models must never share an archive path.
        raise LedgerError(f"grid {grid.name!r} already holds model {spec.name} with other parameters or code (model "
                          f"hash {job.model.model_hash[:12]} vs {spec.model_hash[:12]}); migrate into a new grid name")
    return job


def _never_run(session: Session, job_id: int) -> bool:
    return not session.scalar(
        select(func.count()).select_from(Attempt)
        .where(Attempt.job_id == job_id, Attempt.kind.in_([AttemptKind.MODEL.value, AttemptKind.ARCHIVE.value]))
    )


def _record_preexisting(session: Session, job_id: int, found: Sequence[FoundFile], origin: str) -> None:
    table = cast(Table, PreexistingFile.__table__)
    known = {row.path: row for row in session.scalars(select(PreexistingFile).where(PreexistingFile.job_id == job_id))}
    now = utcnow()
    for f in found:
        row = known.get(f.path)
        if row is None:
            session.execute(insert(table).values(job_id=job_id, path=f.path, size=f.size, sha256=f.sha256,
                                                 recorded_sha256=f.recorded_sha256, origin=origin, found_at=now))
        elif row.moved_to is None and (row.sha256 != f.sha256 or row.size != f.size):
            row.size, row.sha256, row.recorded_sha256, row.found_at = f.size, f.sha256, f.recorded_sha256, now
        # A row already moved aside keeps its record: the file now at the path is a later one.


class _Adopter:
    def __init__(self, ledger: Ledger, grid_name: str, origin: str) -> None:
        self.ledger = ledger
        self.patience = ledger.patience  # read by the retry decorator
        self.grid_name = grid_name
        self.origin = origin
        self.host = socket.gethostname()

    @_transient_db_errors
    def adopt(self, item: Adoption) -> str:
        with self.ledger._session() as session:
            grid = _grid(session, self.grid_name)
            job = _existing(session, grid, item.spec)
            if job is not None:
                if job.state == JobState.ARCHIVED:
                    return "already"
                if job.state != JobState.PENDING or not _never_run(session, job.id):
                    return job.state
            paths = [f.path for f in item.files]
            files = cast(Table, ArchivedFile.__table__)
            clash = session.scalar(select(files.c.path).where(files.c.path.in_(paths)).limit(1)) if paths else None
            if clash is not None:
                raise LedgerError(f"{clash}: already recorded as archived by another job of the ledger")
            if job is None:
                job = _new_job(session, grid, item.spec, JobState.ARCHIVED, None, item.provenance)
            else:
                # A pending job pdrflow never ran (an earlier migrate found its files damaged, now they are
                # whole): registered again as adopted; nothing of pdrflow's is overwritten.
                job.state, job.reason, job.provenance = JobState.ARCHIVED.value, None, item.provenance
                session.execute(delete(PreexistingFile).where(PreexistingFile.job_id == job.id,
                                                              PreexistingFile.moved_to.is_(None)))
            now = utcnow()
            if item.files:
                session.execute(insert(files), [{"job_id": job.id, "path": f.path, "size": f.size, "sha256": f.sha256,
                                                 "archived_at": now} for f in item.files])
            session.add(Attempt(job_id=job.id, kind=AttemptKind.ADOPT.value, outcome=AttemptOutcome.OK.value,
                                started_at=now, ended_at=now, host=self.host))
            return "adopted"

    @_transient_db_errors
    def leave(self, item: Leftover) -> str:
        with self.ledger._session() as session:
            grid = _grid(session, self.grid_name)
            job = _existing(session, grid, item.spec)
            if job is None:
                job = _new_job(session, grid, item.spec, JobState.PENDING, item.reason, item.provenance)
            elif job.state == JobState.ARCHIVED:
                return "already"
            elif job.state != JobState.PENDING:
                return job.state
            else:
                job.reason = item.reason
            _record_preexisting(session, job.id, item.found, self.origin)
            return "pending"


def adopt_models(ledger: Ledger, grid_name: str, adoptions: Sequence[Adoption], leftovers: Sequence[Leftover],
                 origin: str) -> AdoptionResult:
    """Register ``adoptions`` as archived and ``leftovers`` as pending with their found files."""
    adopter = _Adopter(ledger, grid_name, origin)
    result = AdoptionResult()
    for adoption in adoptions:
        outcome = adopter.adopt(adoption)
        if outcome == "adopted":
            result.adopted.append(adoption.spec.name)
        elif outcome == "already":
            result.already_archived.append(adoption.spec.name)
        else:
            result.untouched.append((adoption.spec.name, outcome))
    for leftover in leftovers:
        outcome = adopter.leave(leftover)
        if outcome == "pending":
            result.pending.append(leftover.spec.name)
        elif outcome == "already":
            result.already_archived.append(leftover.spec.name)
        else:
            result.untouched.append((leftover.spec.name, outcome))
    return result
