"""The ledger's side of an archival: its attempt with the planned files, the claims on the archive paths,
the one-transaction commit of the files and the ``archived`` state, or ``failed_storage``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, update

from ..errors import LedgerError
from ..states import JobState
from ..storage.base import StoredFile
from .retries import _transient_db_errors
from .schema import ArchivedFile, Attempt, AttemptKind, AttemptOutcome, Job, PreexistingFile, utcnow
from .transitions import Transitions
from .types import ArchiveClaims, ArchiveStart


class ArchiveRecords(Transitions):
    @_transient_db_errors
    def start_archive(self, job_id: int, host: str, worker: str | None,
                      planned_files: dict[str, str] | None = None) -> ArchiveStart:
        """``planned_files`` (archive path -> sha256) is recorded before any byte is uploaded: whatever an
        archival cut off leaves at a final path is then known to be pdrflow's own. The count of earlier
        archivals comes in the same transaction (a worker's database connection costs more than the query)."""
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state not in (JobState.COMPUTED, JobState.FAILED_STORAGE):
                state = job.state if job is not None else "missing"
                raise LedgerError(f"job {job_id}: cannot archive in state {state}")
            earlier = session.scalar(
                select(func.count()).select_from(Attempt)
                .where(Attempt.job_id == job_id, Attempt.kind == AttemptKind.ARCHIVE.value)
            )
            attempt = Attempt(job_id=job_id, kind=AttemptKind.ARCHIVE.value, host=host, worker=worker,
                              planned_files=planned_files)
            session.add(attempt)
            session.flush()
            return ArchiveStart(attempt.id, earlier=bool(earlier))

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
