"""Ledger operations: every state change is one short transaction, checked against the state machine.

No session outlives a call, so nothing is held open while a model runs. Writers retry by
error class (``OperationalError``: SQLite "database is locked", a dropped server connection)
with bounded backoff, never by matching message text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from sqlalchemy import Engine, Table, create_engine, event, func, select, update
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from ..errors import ConfigError
from ..states import JobState
from .archival import ArchiveRecords
from .filesystems import NETWORK_FILESYSTEMS, filesystem_type
from .migrate import ensure_schema
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
from .types import ArchiveClaims, JobRef, ModelStart, Registration  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from ..grid import ModelSpec

log = logging.getLogger("pdrflow")
P = ParamSpec("P")
T = TypeVar("T")


def _sqlite_pragmas() -> Callable[[Any, Any], None]:
    """The connect hook of one SQLite engine.

    WAL (readers never block the archival commits) keeps its index in memory shared by the processes
    of one host (the mmapped -shm file): on a network filesystem that corrupts the ledger or fails. There
    the journal is DELETE, with synchronous FULL (NORMAL is safe with WAL only), and the engine says why, once.
    """
    warned = False

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        nonlocal warned
        cursor = dbapi_connection.cursor()
        try:
            # The file SQLite really opened (relative paths, file: URIs); "" for an in-memory database. Looked
            # up per new connection (pooled, so rarely): reading mountinfo costs well under a millisecond.
            main = next((row[2] for row in cursor.execute("PRAGMA database_list").fetchall() if row[1] == "main"), "")
            fstype = filesystem_type(main) if main else None
            network = fstype in NETWORK_FILESYSTEMS
            if network and not warned:
                warned = True
                log.warning("the SQLite ledger %s is on a network filesystem (%s): journal_mode=DELETE, not WAL "
                            "(WAL needs memory shared on one host); workers on other hosts need PostgreSQL or "
                            "MariaDB", main, fstype)
            cursor.execute(f"PRAGMA journal_mode={'DELETE' if network else 'WAL'}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA synchronous={'FULL' if network else 'NORMAL'}")  # NORMAL: safe with WAL
        finally:
            cursor.close()

    return pragmas


def _create_private(database: str | None) -> None:
    """A new SQLite ledger file is owner-only (0600): it holds the grid's provenance (paths, hosts).
    SQLite's -wal/-shm files take the main file's permissions."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (FileExistsError, FileNotFoundError):  # a missing directory: SQLite reports it
        pass


def make_engine(url: URL | str, poolclass: type[Pool] | None = None) -> Engine:
    """``poolclass``: a worker's pool that keeps no connection between transactions (tasks/budget.py);
    None: the driver's, which keeps a few."""
    url_text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if url_text.startswith("sqlite"):
        _create_private(make_url(url_text).database)
        pool: dict[str, Any] = {} if poolclass is None else {"poolclass": poolclass}
        engine = create_engine(url, connect_args={"timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas())  # one hook (and one warning) per engine
        return engine
    if poolclass is not None:
        return create_engine(url, poolclass=poolclass)
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


_JOB_REF_COLUMNS = (Job.id, Job.name, Job.state, Model.model_hash, Job.staged_dir, Job.reason, Job.staged_host)


def _job_ref(row: Any) -> JobRef:
    return JobRef(row.id, row.name, JobState(row.state), row.model_hash, row.staged_dir, row.reason, row.staged_host)


class Ledger(ArchiveRecords):
    def __init__(self, url: URL | str, *, create: bool = True, patience: float = 20.0,
                 poolclass: type[Pool] | None = None) -> None:
        """``create``: make the schema in an empty database and check its revision (the driver);
        workers pass False and trust the driver's check. ``patience``: seconds a call keeps
        retrying transient database errors before it raises. ``poolclass``: see ``make_engine``."""
        self.patience = patience
        self.engine = make_engine(url, poolclass)
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
            select(*_JOB_REF_COLUMNS)
            .join(Model, Job.model_id == Model.id)
            .join(Grid, Job.grid_id == Grid.id)
            .where(Grid.name == grid_name)
            .order_by(Job.id)
        )
        if states is not None:
            query = query.where(Job.state.in_([s.value for s in states]))
        with self._session() as session:
            return [_job_ref(row) for row in session.execute(query)]

    @_transient_db_errors
    def job(self, job_id: int) -> JobRef:
        with self._session() as session:
            row = session.execute(
                select(*_JOB_REF_COLUMNS)
                .join(Model, Job.model_id == Model.id)
                .where(Job.id == job_id)
            ).one()
            return _job_ref(row)

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
    ) -> bool:
        """``missing_outputs``: optional expected outputs the run did not write (NULL when none, so that
        counting them is ``IS NOT NULL`` on every backend).

        Returns False, changing nothing, when the attempt is no longer running: the run was given up
        while it ran (its worker declared lost, the job requeued and perhaps running again elsewhere),
        and a late finish must not take the job over from the run that has it now."""
        with self._session() as session:
            session.get(Job, job_id, with_for_update=True)  # after a requeue of the job, or before it: not during
            outcome = session.scalar(select(Attempt.outcome).where(Attempt.id == attempt_id))
            if outcome != AttemptOutcome.RUNNING.value:
                return False
            if error is None:
                self._move(session, job_id, JobState.COMPUTED, staged_dir=staged_dir, staged_host=host,
                           provenance=provenance, missing_outputs=list(missing_outputs) or None)
                self._finish_attempt(session, attempt_id, AttemptOutcome.OK, None)
            else:
                self._move(session, job_id, JobState.FAILED_MODEL, error, staged_dir=staged_dir, staged_host=host,
                           provenance=provenance)
                self._finish_attempt(session, attempt_id, AttemptOutcome.FAILED, error)
        return True

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
