"""Ledger operations: every state change is one short transaction, checked against the state machine.

No session outlives a call, so nothing is held open while a model runs. Writers retry by
error class (``OperationalError``: SQLite "database is locked", a dropped server connection)
with bounded backoff, never by matching message text.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, Table, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential, wait_random

from ..errors import ConfigError, LedgerError
from ..states import ALLOWED_TRANSITIONS, REPAIR_TRANSITIONS, JobState
from ..storage.base import StoredFile
from .migrate import ensure_schema
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

P = ParamSpec("P")
T = TypeVar("T")


def _transient(error: BaseException) -> bool:
    """Worth retrying: by error class (lock, dropped connection, deadlock), never by message text."""
    return isinstance(error, OperationalError) or (isinstance(error, DBAPIError) and error.connection_invalidated)


def _transient_db_errors(method: Callable[P, T]) -> Callable[P, T]:
    """Retry a whole ledger operation (a fresh transaction each time) for ``self.patience`` seconds."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        ledger = args[0]
        for attempt in Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(ledger.patience),  # type: ignore[attr-defined]
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            reraise=True,
        ):
            with attempt:
                return method(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


@dataclass(frozen=True)
class JobRef:
    """What the driver needs to act on a job, detached from any session."""

    id: int
    name: str
    state: JobState
    model_hash: str
    staged_dir: str | None
    reason: str | None


@dataclass(frozen=True)
class ArchiveClaims:
    """What the ledger knows about the files at one job's archive paths (before an archival writes)."""

    own: dict[str, frozenset[str]]  # path -> sha256 digests pdrflow wrote or planned there for this job
    preexisting: dict[str, tuple[int, str]]  # path -> (PreexistingFile id, sha256 found), not moved aside yet


@dataclass(frozen=True)
class ModelStart:
    """What ``start_model`` decided: a new attempt, or (``attempt_id`` None) outputs already staged."""

    attempt_id: int | None
    staged_dir: str | None = None


@dataclass(frozen=True)
class Registration:
    total: int
    new: int
    archived: int


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the archival commits
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses no committed txn
    cursor.close()


def _create_private(database: str | None) -> None:
    """A new SQLite ledger file is owner-only (0600): it holds the grid's provenance (paths, hosts).
    SQLite's -wal/-shm files take the main file's permissions."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (FileExistsError, FileNotFoundError):  # a missing directory: SQLite reports it
        pass


def make_engine(url: URL | str) -> Engine:
    url_text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if url_text.startswith("sqlite"):
        _create_private(make_url(url_text).database)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, pool_recycle=3600)


def _bulk_insert(session: Session, table: Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """executemany straight on the DBAPI cursor: SQLAlchemy's per-row processing costs seconds per
    100k rows. Values must already be what the driver takes (JSON pre-serialized)."""
    dialect = session.get_bind().dialect
    compiled = table.insert().compile(dialect=dialect, column_keys=columns)
    order = compiled.positiontup  # None for named paramstyles
    cursor = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if order is None:
            cursor.executemany(str(compiled), [dict(zip(columns, row, strict=True)) for row in rows])
        else:
            index = [columns.index(name) for name in order]
            cursor.executemany(str(compiled), [tuple(row[i] for i in index) for row in rows])
    finally:
        cursor.close()


def _model_ids(session: Session, hashes: Sequence[str]) -> dict[str, int]:
    if len(hashes) > 5000:  # one scan beats hundreds of IN queries for big grids
        wanted = set(hashes)
        return {h: i for h, i in session.execute(select(Model.model_hash, Model.id)) if h in wanted}
    ids: dict[str, int] = {}
    for start in range(0, len(hashes), 500):  # bounded IN lists for every backend
        chunk = hashes[start : start + 500]
        ids.update(session.execute(select(Model.model_hash, Model.id).where(Model.model_hash.in_(chunk))).all())
    return ids


class Ledger:
    def __init__(self, url: URL | str, *, create: bool = True, patience: float = 20.0) -> None:
        """``create``: make the schema in an empty database and check its revision (the driver);
        workers pass False and trust the driver's check. ``patience``: seconds a call keeps
        retrying transient database errors before it raises."""
        self.patience = patience
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            ensure_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for the read-only queries of ``ledger/queries.py``; whatever it did is rolled back."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    # ---- registration -------------------------------------------------------------------

    @_transient_db_errors
    def register_grid(self, grid_name: str, specs: Iterable[ModelSpec]) -> Registration:
        """Add the grid's models; models already known keep their job and state.

        A name already used in this grid by a model with a different hash is refused: the
        two would share an archive path.
        """
        specs = list(specs)
        with self._session() as session:
            grid = session.scalar(select(Grid).where(Grid.name == grid_name))
            if grid is None:
                grid = Grid(name=grid_name)
                session.add(grid)
                session.flush()
            known = {
                name: (model_hash, state)
                for name, model_hash, state in session.execute(
                    select(Job.name, Model.model_hash, Job.state)
                    .join(Model, Job.model_id == Model.id)
                    .where(Job.grid_id == grid.id)
                )
            }
            new_specs = []
            archived = 0
            for spec in specs:
                if spec.name in known:
                    model_hash, state = known[spec.name]
                    if model_hash != spec.model_hash:
                        raise ConfigError(
                            f"grid {grid_name!r} already holds model {spec.name} computed with other parameters or "
                            f"code (model hash {model_hash[:12]} vs {spec.model_hash[:12]}); use a new grid name"
                        )
                    archived += state == JobState.ARCHIVED
                else:
                    new_specs.append(spec)
            if new_specs:
                hashes = [spec.model_hash for spec in new_specs]
                ids = _model_ids(session, hashes)
                missing = {spec.model_hash: spec for spec in new_specs if spec.model_hash not in ids}
                now = utcnow()
                if missing:
                    _bulk_insert(session, cast(Table, Model.__table__), ["model_hash", "created_at"],
                                 [(h, now) for h in missing])
                    ids.update(_model_ids(session, list(missing)))
                _bulk_insert(
                    session, cast(Table, Job.__table__),
                    ["grid_id", "model_id", "name", "metallicity", "density", "mass", "fuv", "varied", "state",
                     "created_at", "updated_at"],
                    [(grid.id, ids[s.model_hash], s.name, s.axes["metallicity"], s.axes["density"], s.axes["mass"],
                      s.axes["fuv"], json.dumps(dict(s.varied)) if s.varied else None, JobState.PENDING.value, now,
                      now) for s in new_specs],
                )
            return Registration(total=len(specs), new=len(new_specs), archived=archived)

    # ---- queries --------------------------------------------------------------------------

    @_transient_db_errors
    def grid_id(self, grid_name: str) -> int | None:
        with self._session() as session:
            return session.scalar(select(Grid.id).where(Grid.name == grid_name))

    @_transient_db_errors
    def jobs(self, grid_name: str, states: Sequence[JobState] | None = None) -> list[JobRef]:
        query = (
            select(Job.id, Job.name, Job.state, Model.model_hash, Job.staged_dir, Job.reason)
            .join(Model, Job.model_id == Model.id)
            .join(Grid, Job.grid_id == Grid.id)
            .where(Grid.name == grid_name)
            .order_by(Job.id)
        )
        if states is not None:
            query = query.where(Job.state.in_([s.value for s in states]))
        with self._session() as session:
            return [
                JobRef(row.id, row.name, JobState(row.state), row.model_hash, row.staged_dir, row.reason)
                for row in session.execute(query)
            ]

    @_transient_db_errors
    def job(self, job_id: int) -> JobRef:
        with self._session() as session:
            row = session.execute(
                select(Job.id, Job.name, Job.state, Model.model_hash, Job.staged_dir, Job.reason)
                .join(Model, Job.model_id == Model.id)
                .where(Job.id == job_id)
            ).one()
            return JobRef(row.id, row.name, JobState(row.state), row.model_hash, row.staged_dir, row.reason)

    @_transient_db_errors
    def state_counts(self, grid_name: str) -> dict[str, int]:
        with self._session() as session:
            rows = session.execute(
                select(Job.state, func.count()).join(Grid, Job.grid_id == Grid.id)
                .where(Grid.name == grid_name).group_by(Job.state)
            )
            return {state: count for state, count in rows}

    @_transient_db_errors
    def attempt_counts(self, grid_name: str) -> dict[str, int]:
        with self._session() as session:
            rows = session.execute(
                select(Attempt.kind, func.count())
                .join(Job, Attempt.job_id == Job.id)
                .join(Grid, Job.grid_id == Grid.id)
                .where(Grid.name == grid_name)
                .group_by(Attempt.kind)
            )
            counts = {kind.value: 0 for kind in AttemptKind}
            counts.update({kind: count for kind, count in rows})
            return counts

    @_transient_db_errors
    def archived_files(self, grid_name: str) -> list[tuple[str, str, int, str]]:
        """(job name, path, size, sha256) of every file recorded as archived in the grid."""
        with self._session() as session:
            rows = session.execute(
                select(Job.name, ArchivedFile.path, ArchivedFile.size, ArchivedFile.sha256)
                .join(Job, ArchivedFile.job_id == Job.id)
                .join(Grid, Job.grid_id == Grid.id)
                .where(Grid.name == grid_name)
                .order_by(ArchivedFile.path)
            )
            return [tuple(row) for row in rows]  # type: ignore[misc]

    @_transient_db_errors
    def job_details(self, grid_name: str, job: str) -> dict[str, Any] | None:
        """Everything the ledger knows of one job (by name or id): provenance, attempts, files."""
        with self._session() as session:
            query = select(Job).join(Grid, Job.grid_id == Grid.id).where(Grid.name == grid_name)
            query = query.where(Job.id == int(job)) if job.isdigit() else query.where(Job.name == job)
            row = session.scalar(query)
            if row is None:
                return None
            attempts = session.scalars(select(Attempt).where(Attempt.job_id == row.id).order_by(Attempt.id))
            files = session.scalars(select(ArchivedFile).where(ArchivedFile.job_id == row.id)
                                    .order_by(ArchivedFile.path))
            preexisting = session.scalars(select(PreexistingFile).where(PreexistingFile.job_id == row.id)
                                          .order_by(PreexistingFile.path))
            return {
                "id": row.id, "name": row.name, "grid": grid_name, "state": row.state, "reason": row.reason,
                "model_hash": row.model.model_hash,
                "axes": {"metallicity": row.metallicity, "density": row.density, "mass": row.mass, "fuv": row.fuv},
                "varied": row.varied or {}, "staged_dir": row.staged_dir, "staged_host": row.staged_host,
                "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
                "provenance": row.provenance or {},
                "attempts": [
                    {"kind": a.kind, "outcome": a.outcome, "started_at": a.started_at.isoformat(),
                     "ended_at": a.ended_at.isoformat() if a.ended_at else None, "host": a.host,
                     "worker": a.worker, "slurm_job_id": a.slurm_job_id, "error": a.error}
                    for a in attempts
                ],
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
                "missing_outputs": list(row.missing_outputs or []),
                "preexisting_files": [
                    {"path": f.path, "size": f.size, "sha256": f.sha256, "origin": f.origin, "moved_to": f.moved_to,
                     "moved_at": f.moved_at.isoformat() if f.moved_at else None}
                    for f in preexisting
                ],
            }

    # ---- transitions -----------------------------------------------------------------------

    @staticmethod
    def _move(session: Session, job_id: int, new: JobState, reason: str | None = None, *, repair: bool = False,
              **values: Any) -> Job:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise LedgerError(f"job {job_id} does not exist")
        old = JobState(job.state)
        if new not in ALLOWED_TRANSITIONS[old] or ((old, new) in REPAIR_TRANSITIONS and not repair):
            raise LedgerError(f"job {job_id} ({job.name}): illegal transition {old} -> {new}")
        job.state = new.value
        job.reason = reason
        for key, value in values.items():
            setattr(job, key, value)
        return job

    @staticmethod
    def _finish_attempt(session: Session, attempt_id: int, outcome: AttemptOutcome, error: str | None,
                        **values: Any) -> None:
        # Core statement on the table: no ORM bulk-update bookkeeping (a few ms per call).
        attempts = cast(Table, Attempt.__table__)
        session.execute(
            update(attempts).where(attempts.c.id == attempt_id)
            .values(outcome=outcome.value, error=error, ended_at=utcnow(), **values)
        )

    @_transient_db_errors
    def start_model(self, job_id: int, host: str, worker: str | None, slurm_job_id: str | None = None,
                    staged_readable: Callable[[str], bool] | None = None) -> ModelStart:
        """Record a model run starting, in one transaction with the question whether it must run at all.

        Dask reruns a finished task whose result it lost (the worker holding it died before the driver
        fetched it): the job is ``computed`` then. Its outputs are archived, not computed again, if
        ``staged_readable(staged_dir)`` says this worker can read them (same host or shared scratch);
        otherwise the job goes back through ``pending`` and the model runs again."""
        with self._session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is not None and job.state == JobState.COMPUTED:
                if job.staged_dir and staged_readable is not None and staged_readable(job.staged_dir):
                    return ModelStart(attempt_id=None, staged_dir=job.staged_dir)
                reason = "the staged outputs of a lost run cannot be read here: computing again"
                self._move(session, job_id, JobState.PENDING, reason, staged_dir=None, staged_host=None)
                self._move(session, job_id, JobState.RUNNING)
            elif job is not None and job.state == JobState.RUNNING:
                # Dask re-ran the task after its worker died or retired: that run is lost, not failed.
                session.execute(
                    update(Attempt)
                    .where(Attempt.job_id == job_id, Attempt.kind == AttemptKind.MODEL.value,
                           Attempt.outcome == AttemptOutcome.RUNNING.value)
                    .values(outcome=AttemptOutcome.INTERRUPTED.value, error="worker lost: run restarted",
                            ended_at=utcnow())
                )
            else:
                self._move(session, job_id, JobState.RUNNING)
            attempt = Attempt(job_id=job_id, kind=AttemptKind.MODEL.value, host=host, worker=worker,
                              slurm_job_id=slurm_job_id)
            session.add(attempt)
            session.flush()
            return ModelStart(attempt_id=attempt.id)

    @_transient_db_errors
    def finish_model(
        self, job_id: int, attempt_id: int, *, error: str | None, staged_dir: str | None, host: str,
        provenance: dict[str, Any], missing_outputs: Sequence[str] = (),
    ) -> None:
        """``missing_outputs``: optional expected outputs the run did not write (NULL when none, so that
        counting them is ``IS NOT NULL`` on every backend)."""
        with self._session() as session:
            if error is None:
                self._move(session, job_id, JobState.COMPUTED, staged_dir=staged_dir, staged_host=host,
                           provenance=provenance, missing_outputs=list(missing_outputs) or None)
                self._finish_attempt(session, attempt_id, AttemptOutcome.OK, None)
            else:
                self._move(session, job_id, JobState.FAILED_MODEL, error, staged_dir=staged_dir, staged_host=host,
                           provenance=provenance)
                self._finish_attempt(session, attempt_id, AttemptOutcome.FAILED, error)

    @_transient_db_errors
    def start_archive(self, job_id: int, host: str, worker: str | None,
                      planned_files: dict[str, str] | None = None) -> int:
        """``planned_files`` (archive path -> sha256) is recorded before any byte is uploaded: whatever an
        archival cut off leaves at a final path is then known to be pdrflow's own."""
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state not in (JobState.COMPUTED, JobState.FAILED_STORAGE):
                state = job.state if job is not None else "missing"
                raise LedgerError(f"job {job_id}: cannot archive in state {state}")
            attempt = Attempt(job_id=job_id, kind=AttemptKind.ARCHIVE.value, host=host, worker=worker,
                              planned_files=planned_files)
            session.add(attempt)
            session.flush()
            return attempt.id

    @_transient_db_errors
    def archive_attempts(self, job_id: int) -> int:
        """How many archivals of this job were started (this one included)."""
        with self._session() as session:
            return int(session.scalar(
                select(func.count()).select_from(Attempt)
                .where(Attempt.job_id == job_id, Attempt.kind == AttemptKind.ARCHIVE.value)
            ) or 0)

    @_transient_db_errors
    def archive_claims(self, job_id: int, attempt_id: int | None = None) -> ArchiveClaims:
        """The digests this job's archived files and earlier archivals' plans put at its paths, and the
        files found there before pdrflow (``PreexistingFile``) not moved aside yet. ``attempt_id``: the
        running archival, left out (its plan is the staged files themselves)."""
        own: dict[str, set[str]] = {}
        with self._session() as session:
            for path, digest in session.execute(
                select(ArchivedFile.path, ArchivedFile.sha256).where(ArchivedFile.job_id == job_id)
            ):
                own.setdefault(path, set()).add(digest)
            plans = select(Attempt.planned_files).where(
                Attempt.job_id == job_id, Attempt.kind == AttemptKind.ARCHIVE.value, Attempt.planned_files.is_not(None)
            )
            if attempt_id is not None:
                plans = plans.where(Attempt.id != attempt_id)
            for (planned,) in session.execute(plans):
                if isinstance(planned, str):  # a driver handing JSON back as text
                    planned = json.loads(planned)
                for path, digest in (planned or {}).items():
                    own.setdefault(path, set()).add(str(digest))
            preexisting = {
                path: (row_id, digest)
                for row_id, path, digest in session.execute(
                    select(PreexistingFile.id, PreexistingFile.path, PreexistingFile.sha256)
                    .where(PreexistingFile.job_id == job_id, PreexistingFile.moved_to.is_(None))
                )
            }
        return ArchiveClaims({path: frozenset(digests) for path, digests in own.items()}, preexisting)

    @_transient_db_errors
    def record_moved_aside(self, moves: Sequence[tuple[int, str]]) -> None:
        """(PreexistingFile id, archive path it was moved to) for files an archival moved out of its way."""
        if not moves:
            return
        table = cast(Table, PreexistingFile.__table__)
        now = utcnow()
        with self._session() as session:
            for row_id, moved_to in moves:
                session.execute(update(table).where(table.c.id == row_id).values(moved_to=moved_to, moved_at=now))

    @_transient_db_errors
    def commit_archive(self, job_id: int, attempt_id: int, files: Sequence[StoredFile]) -> None:
        """Record the job's files and its ``archived`` state in one transaction."""
        with self._session() as session:
            self._move(session, job_id, JobState.ARCHIVED, staged_dir=None)
            # Core statements on the table (one executemany): the ORM's bulk path costs ~5 ms a model.
            table = cast(Table, ArchivedFile.__table__)
            session.execute(delete(table).where(table.c.job_id == job_id))
            now = utcnow()
            if files:
                session.execute(
                    insert(table),
                    [{"job_id": job_id, "path": f.path, "size": f.size, "sha256": f.sha256, "archived_at": now}
                     for f in files],
                )
            # The committed rows now say what the plan said (~10 kB a model: 1 GB over 100k models).
            self._finish_attempt(session, attempt_id, AttemptOutcome.OK, None, planned_files=None)

    @_transient_db_errors
    def fail_archive(self, job_id: int, attempt_id: int | None, reason: str) -> None:
        with self._session() as session:
            self._move(session, job_id, JobState.FAILED_STORAGE, reason)
            if attempt_id is not None:
                self._finish_attempt(session, attempt_id, AttemptOutcome.FAILED, reason)

    @_transient_db_errors
    def requeue(self, job_id: int, reason: str) -> None:
        """Back to ``pending``: the model must run (again). Open attempts end as interrupted."""
        with self._session() as session:
            self._move(session, job_id, JobState.PENDING, reason, staged_dir=None, staged_host=None)
            session.execute(
                update(Attempt)
                .where(Attempt.job_id == job_id, Attempt.outcome == AttemptOutcome.RUNNING.value)
                .values(outcome=AttemptOutcome.INTERRUPTED.value, error=reason, ended_at=utcnow())
            )

    @_transient_db_errors
    def requeue_running(self, job_ids: Iterable[int], reason: str) -> int:
        """Return those of the jobs still ``running`` to ``pending`` (Ctrl-C, lost worker, dead driver)."""
        ids = list(job_ids)
        moved = 0
        with self._session() as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                # The WHERE clause is the state machine here: only running -> pending.
                result = cast(CursorResult[Any], session.execute(
                    update(Job)
                    .where(Job.id.in_(chunk), Job.state == JobState.RUNNING.value)
                    .values(state=JobState.PENDING.value, reason=reason, updated_at=utcnow())
                ))
                moved += result.rowcount or 0
                session.execute(
                    update(Attempt)
                    .where(Attempt.job_id.in_(chunk), Attempt.kind == AttemptKind.MODEL.value,
                           Attempt.outcome == AttemptOutcome.RUNNING.value)
                    .values(outcome=AttemptOutcome.INTERRUPTED.value, error=reason, ended_at=utcnow())
                )
        return moved

    @_transient_db_errors
    def recover_grid(self, grid_name: str, reason: str) -> tuple[int, int]:
        """After taking the grid's lease: whatever a dead driver left running was interrupted.

        Returns (jobs back to pending, attempts closed)."""
        with self._session() as session:
            grid_id = session.scalar(select(Grid.id).where(Grid.name == grid_name))
            if grid_id is None:
                return 0, 0
            grid_jobs = select(Job.id).where(Job.grid_id == grid_id)
            # No subquery on jobs itself: MySQL refuses that in an UPDATE.
            jobs = cast(CursorResult[Any], session.execute(
                update(Job).where(Job.grid_id == grid_id, Job.state == JobState.RUNNING.value)
                .values(state=JobState.PENDING.value, reason=reason, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )).rowcount
            attempts = cast(CursorResult[Any], session.execute(
                update(Attempt).where(Attempt.job_id.in_(grid_jobs), Attempt.outcome == AttemptOutcome.RUNNING.value)
                .values(outcome=AttemptOutcome.INTERRUPTED.value, error=reason, ended_at=utcnow())
                .execution_options(synchronize_session=False)
            )).rowcount
        return jobs or 0, attempts or 0

    @_transient_db_errors
    def end_open_archive_attempts(self, job_ids: Iterable[int], reason: str) -> None:
        ids = list(job_ids)
        with self._session() as session:
            for start in range(0, len(ids), 500):
                session.execute(
                    update(Attempt)
                    .where(Attempt.job_id.in_(ids[start : start + 500]), Attempt.kind == AttemptKind.ARCHIVE.value,
                           Attempt.outcome == AttemptOutcome.RUNNING.value)
                    .values(outcome=AttemptOutcome.INTERRUPTED.value, error=reason, ended_at=utcnow())
                )
